"""Every bad input ends in one clear line, a non-zero exit and no stack trace.

Each case runs the real entry point's ``main`` with its command line, in this process.
"""
from __future__ import annotations

import logging

import pytest

from gan_lab.loggers import wandb_logger
from tests.conftest import CONF, TINY, refused, run_main

#: (group, overrides, expected text, or that text and further pieces its line must name); exit status 2 for
#: gan_lab's own messages, Hydra's are 1
PER_GROUP = [
    ("model", ["model=nonexistent"], "Could not find 'model/nonexistent'"),
    ("data", ["data.batch_size=abc"],
     "gan_lab: error: data.batch_size='abc' must be an integer"),
    ("loss", ["loss.discriminator.real_target=high"],
     "gan_lab: error: loss.discriminator.real_target='high' must be a"),
    ("optimizer", ["optimizer.generator.lr=-0.1"],
     "gan_lab: error: optimizer.generator.lr=-0.1 must be a number > 0"),
    ("scheduler", ["scheduler=exponential", "scheduler.generator.gamma=fast"],
     "gan_lab: error: scheduler.generator.gamma='fast' must be a"),
    ("noise", ["noise.latent_dim=0"],
     "gan_lab: error: noise.latent_dim=0 must be "),
    ("trainer", ["+trainer.max_epoch=3"], ("gan_lab: error: trainer: ", "'max_epoch'", "conf/trainer/")),
    ("logger", ["+logger.csv.flush_every=5"], ("gan_lab: error: logger.csv: ", "CSVLogger", "'flush_every'")),
    ("callbacks", ["callbacks.divergence.patience=0"],
     "gan_lab: error: callbacks.divergence.patience=0 must be "),
    ("experiment", ["experiment=nonexistent"], "Could not find 'experiment/nonexistent'"),
    ("augment", ["augment=custom", "augment.hflip_p=2"],
     "gan_lab: error: augment.hflip_p=2 must be "),
    ("hparams_search", ["hparams_search=nonexistent"], "Could not find 'hparams_search/nonexistent'"),
    ("d_augment", ["d_augment=diffaugment", "d_augment.policy=[blur]"],
     ("gan_lab: error: d_augment.policy=['blur']", "color, translation, cutout",
      "d_augment.policy=[color,translation,cutout]")),
    ("evaluator", ["callbacks=with_metrics", "callbacks.metrics.evaluator.metrics=[fid,fidd]"],
     ("gan_lab: error: evaluator.metrics=['fidd']", "fid, kid, is")),
]

OTHER_INPUTS = [
    ("unknown data", ["data=nonexistent"], "Could not find 'data/nonexistent'"),
    ("unknown noise", ["noise=nonexistent"], "Could not find 'noise/nonexistent'"),
    ("unknown key", ["trainer.max_epoch=3"], "Could not override 'trainer.max_epoch'"),
    ("image size", ["data.image_size=48"],
     ("gan_lab: error: image_size=48", "DCGAN generator", "16, 32, 64, 128, 256")),
    ("negative latent_dim", ["noise.latent_dim=-4"], "gan_lab: error: noise.latent_dim=-4 must be "),
    ("batch > dataset", ["data.batch_size=5000"],
     ("gan_lab: error: data.batch_size=5000", "1617", "digits", "data.batch_size<=1617")),
    ("missing checkpoint", ["ckpt_path=/nonexistent/last.ckpt"],
     "gan_lab: error: ckpt_path=/nonexistent/last.ckpt does not exist;"),
    ("unwritable run directory", ["hydra.run.dir=/proc/gan_lab_run"],
     "gan_lab: error: the run directory /proc/gan_lab_run cannot be written"),
    ("wrong type", ["trainer.max_epochs=2.5"],
     "gan_lab: error: trainer.max_epochs=2.5 must be an integer"),
    ("bad betas", ["optimizer.discriminator.betas=[2,0.9]"],
     "gan_lab: error: optimizer.discriminator.betas=[2,0.9] must be "),
    ("no _target_", ["logger=none", "+logger.mine.project=x"], "gan_lab: error: logger.mine has no _target_"),
    ("bad piecewise table", ["scheduler=piecewise", "scheduler.discriminator.milestones=[5,10]"],
     ("gan_lab: error: scheduler milestones (2)", "lrs (10)", "scheduler.*.milestones/lrs")),
    ("negative time limit", ["trainer.max_time={hours:-1}"], "gan_lab: error: trainer.max_time={'hours': -1} is not a time limit"),
    ("no time at all", ["trainer.max_time=00:00:00:00"], "gan_lab: error: trainer.max_time='00:00:00:00' is not a time limit"),
    ("half of exact resume", ["callbacks.rng_state=null"],
     ("gan_lab: error: callbacks.rng_state=null", "callbacks.epoch_position=null")),
    ("the other half", ["callbacks.epoch_position=null"],
     ("gan_lab: error: callbacks.epoch_position=null", "callbacks.rng_state=null")),
    # the conditional variant words this message; here: one gan_lab line, exit 2, before training
    ("conditional model on unlabelled data", ["model=cdcgan", "data=monet"], "gan_lab: error:"),
]


def check(args: list[str], expected: str | tuple[str, ...], tmp_path, capsys) -> str:
    """Runs the entry point with ``args``; returns the line that reports the error, which holds ``expected``
    (its first text, and every further one)."""
    first, *named = (expected,) if isinstance(expected, str) else expected
    run_dir = [] if any(a.startswith("hydra.run.dir=") for a in args) else [f"hydra.run.dir={tmp_path / 'run'}"]
    res = run_main("gan_lab.run", *TINY, *run_dir, *args, capsys=capsys)
    assert res.returncode != 0, res.stdout[-2000:]
    assert first in res.stderr, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    if first.startswith("gan_lab: error:"):
        assert res.returncode == 2
        line = next(l for l in res.stderr.splitlines() if l.startswith("gan_lab: error:"))
        assert line.endswith(".") and line.count("gan_lab: error:") == 1
    assert not (tmp_path / "run" / "checkpoints").exists()  # failed before training
    line = next(line for line in res.stderr.splitlines() if line.startswith("gan_lab: error:") or first in line)
    assert all(n in line for n in named), line
    return line


@pytest.mark.parametrize("group,args,expected", PER_GROUP, ids=[c[0] for c in PER_GROUP])
def test_bad_override_per_config_group(group, args, expected, tmp_path, capsys):
    line = check(args, expected, tmp_path, capsys)
    assert group in line  # the message points at the group of the bad value


@pytest.mark.parametrize("name,args,expected", OTHER_INPUTS, ids=[c[0] for c in OTHER_INPUTS])
def test_other_bad_inputs(name, args, expected, tmp_path, capsys):
    check(args, expected, tmp_path, capsys)


def test_every_config_group_is_covered():
    # conf/hydra/ holds launcher presets for Hydra itself, not a gan_lab group
    groups = {p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra"}
    assert groups == {c[0] for c in PER_GROUP}


def test_wandb_without_key_goes_offline_and_says_so(tmp_path, monkeypatch, caplog):
    """No WANDB_MODE, no API key, a fresh HOME (no ~/.netrc): offline, with a warning, no prompt."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    with caplog.at_level(logging.WARNING, logger="gan_lab.loggers"):
        logger = wandb_logger(project="gan_lab", name="t", save_dir=str(tmp_path / "run"))
    assert "W&B: no API key configured, logging offline to" in caplog.text
    assert "wandb sync" in caplog.text
    run = logger.experiment  # starts W&B: a prompt or a login error here if it were online
    try:
        run.log({"x": 1.0})
    finally:
        run.finish()
    assert len(list((tmp_path / "run" / "wandb").glob("offline-run-*"))) == 1


def test_user_error_from_a_spawned_worker_is_one_line(capsys):
    from torch.multiprocessing.spawn import ProcessRaisedException

    from gan_lab.errors import report_user_error

    def worker_error(last_line: str) -> ProcessRaisedException:
        text = ("\n\n-- Process 0 terminated with the following error:\nTraceback (most recent call last):\n"
                '  File "gan_lab/callbacks/divergence.py", line 120, in check\n    raise TrainingDiverged(...)\n'
                f"{last_line}\n")
        return ProcessRaisedException(text, 0, 4242)

    message = "train/d_loss is nan at batch 7; the last good checkpoint is runs/x/checkpoints/last.ckpt."
    assert report_user_error(worker_error(f"gan_lab.errors.TrainingDiverged: {message}"))
    assert capsys.readouterr().err == f"gan_lab: error: {message}\n"
    assert not report_user_error(worker_error("RuntimeError: CUDA error: an illegal memory access"))
    assert not report_user_error(worker_error("gan_lab.errors.NoSuchThing: text"))


def test_lightning_rejecting_trainer_values_is_one_sentence(make_cfg):
    from gan_lab.build import build_trainer

    for override, named in (("trainer.strategy=fastest", "strategy='fastest'"),
                            ("trainer.accelerator=tpu9", "accelerator='tpu9'")):
        with refused(named) as info:
            build_trainer(make_cfg(override), [], [])
        assert str(info.value).startswith("trainer: ") and str(info.value).endswith("(see conf/trainer/).")


def test_progress_bar_off_drops_the_configured_bar(make_cfg):
    from lightning.pytorch.callbacks import ProgressBar

    from gan_lab.build import build_callbacks, build_trainer

    cfg = make_cfg("trainer=debug", "trainer.enable_progress_bar=false", tiny=False)
    assert cfg.callbacks.progress_bar is not None
    trainer = build_trainer(cfg, build_callbacks(cfg), [])
    assert not any(isinstance(c, ProgressBar) for c in trainer.callbacks)


@pytest.mark.parametrize("override, named", [
    ("+trainer.gradient_clip_val=1.0",
     ("trainer.gradient_clip_val=1.0", "remove trainer.gradient_clip_val", "model.gradient_clip_norm")),
    ("+trainer.accumulate_grad_batches=2",
     ("trainer.accumulate_grad_batches=2", "remove trainer.accumulate_grad_batches")),
])
def test_automatic_optimisation_keys_are_refused_before_training(make_cfg, override, named):
    """Lightning raises on these only when fit starts, with a stack trace; gan_lab says it first."""
    from gan_lab.build import build_trainer

    with refused(*named):
        build_trainer(make_cfg(override), [], [])
    build_trainer(make_cfg("+trainer.gradient_clip_val=0", "+trainer.accumulate_grad_batches=1"), [], [])


def test_negative_data_workers_are_refused_in_one_sentence(make_cfg):
    from gan_lab.build import build_datamodule

    with refused("data.num_workers=-1", "data.num_workers=0"):
        build_datamodule(make_cfg("data.num_workers=-1"))
