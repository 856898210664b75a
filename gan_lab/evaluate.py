"""Score a trained run: ``python -m gan_lab.evaluate run_dir=<run> [ckpt=...] [metrics=[...]] [num_samples=...]``.

Rebuilds the run from ``<run>/.hydra/config.yaml``, loads the checkpoint (``last.ckpt`` by default;
EMA generator weights when the model keeps them), runs the :class:`~gan_lab.metrics.Evaluator` and
appends the record, with its protocol, to ``<run>/metrics.json``. Its ``epoch`` is the number of
epochs completed when the checkpoint was written, as in the records written during training; a
mid-epoch checkpoint adds ``batch_in_epoch``, the batches trained into the next epoch.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from gan_lab import CONFIG_DIR
from gan_lab.build import make
from gan_lab.metrics.records import append_evaluation
from gan_lab.errors import check_count, check_seed, exit_on_user_error
from gan_lab.runs import load_run, required_run_dir

log = logging.getLogger("gan_lab")


def evaluate(cfg: DictConfig) -> dict:
    """Run the evaluation described by ``cfg`` (conf/evaluate.yaml); returns the record."""
    check_seed(cfg.seed)
    check_count(cfg.num_samples, "num_samples", 2, 1000)  # the Evaluator's own minimum, said before loading
    run = load_run(required_run_dir(cfg), cfg.ckpt, cfg.device)
    evaluator = make(cfg.evaluator, "evaluator")
    out_dir = Path(cfg.run_dir) / "evaluation" / run.checkpoint.stem
    record, flat = evaluator.evaluate(run.model, run.datamodule, out_dir)
    where = {} if run.batch_in_epoch is None else {"batch_in_epoch": run.batch_in_epoch}
    record = {"source": "evaluate", "checkpoint": str(run.checkpoint.resolve()), "epoch": run.epoch, **where,
              "step": run.step, "batches_seen": getattr(run.model, "batches_seen", None),
              "images_seen": getattr(run.model, "images_seen", None), **record}
    append_evaluation(Path(cfg.run_dir) / "metrics.json", record)
    (out_dir / "evaluation.json").parent.mkdir(parents=True, exist_ok=True)
    (out_dir / "evaluation.json").write_text(json.dumps(record, indent=2))
    for key, value in flat.items():
        print(f"{key} = {value:.6g}")
    print(f"gan_lab: evaluation of {run.checkpoint} appended to {Path(cfg.run_dir) / 'metrics.json'}")
    return record


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    exit_on_user_error(evaluate, cfg)


if __name__ == "__main__":
    main()
