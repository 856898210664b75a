"""Score a trained run: ``python -m gan_lab.evaluate run_dir=<run> [ckpt=...] [metrics=[...]] [num_samples=...]``.

Appends the checkpoint's record (default ``last.ckpt``; ``epoch``: completed epochs, plus ``batch_in_epoch``
mid-epoch) to ``<run>/metrics.json``; pictures and ``evaluation.json`` go to ``<run>/evaluation/<checkpoint>/``."""
from __future__ import annotations

import json
from typing import Annotated

import hydra
from omegaconf import DictConfig, ListConfig
from pydantic import Field

from gan_lab import CONFIG_DIR
from gan_lab.build import instantiate_checked
from gan_lab.constraints import AnyInt, check_value
from gan_lab.errors import UserError, exit_on_user_error
from gan_lab.fs import write_problem
from gan_lab.metrics.records import append_evaluation
from gan_lab.runs import load_run, pick_device, required_run_dir


def check_request(cfg: DictConfig) -> None:
    """The values of a request, checked before the run is loaded (``evaluator.*``: by the Evaluator)."""
    check_value(cfg.seed, AnyInt, "seed", 0)
    # the Evaluator's own minimum, said before loading
    check_value(cfg.num_samples, Annotated[int, Field(ge=2)], "num_samples", 1000)
    if not isinstance(cfg.metrics, (list, ListConfig)) or len(cfg.metrics) == 0:
        shown = list(cfg.metrics) if isinstance(cfg.metrics, ListConfig) else cfg.metrics
        raise UserError(f"metrics={shown!r} must list one or more metrics; e.g. metrics=[fid,kid].")
    pick_device(cfg.device)


def evaluate(cfg: DictConfig) -> dict:
    """Run the evaluation described by ``cfg`` (conf/evaluate.yaml); returns the record."""
    check_request(cfg)
    evaluator = instantiate_checked(cfg.evaluator, "evaluator")
    run_dir = required_run_dir(cfg)
    if (problem := write_problem(run_dir)) is not None:
        raise UserError(f"run_dir={run_dir} cannot be written ({problem}), and evaluate appends its record to "
                        f"{run_dir / 'metrics.json'}; evaluate a writable copy of the run.")
    run = load_run(run_dir, cfg.ckpt, cfg.device)
    if all(m == "accuracy" for m in evaluator.metrics) and not run.model.conditional:
        raise UserError(f"metrics={evaluator.metrics!r} measures nothing on run_dir={cfg.run_dir}: class accuracy "
                        f"needs a class-conditional model; choose other metrics, e.g. metrics=[fid,kid].")
    out_dir = run_dir / "evaluation" / run.checkpoint.stem
    record, flat = evaluator.evaluate(run.model, run.datamodule, out_dir)
    where = {} if run.batch_in_epoch is None else {"batch_in_epoch": run.batch_in_epoch}
    record = {"source": "evaluate", "checkpoint": str(run.checkpoint.resolve()), "epoch": run.epoch, **where,
              "step": run.step, "batches_seen": getattr(run.model, "batches_seen", None),
              "images_seen": getattr(run.model, "images_seen", None), **record}
    append_evaluation(run_dir / "metrics.json", record)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "evaluation.json").write_text(json.dumps(record, indent=2))
    for key, value in flat.items():
        print(f"{key} = {value:.6g}")
    print(f"gan_lab: evaluation of {run.checkpoint} appended to {run_dir / 'metrics.json'}")
    return record


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    exit_on_user_error(evaluate, cfg,
                       interrupted="evaluate interrupted (Ctrl-C); run the same command again to score the checkpoint.")


if __name__ == "__main__":
    main()
