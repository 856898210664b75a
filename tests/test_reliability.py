"""Fault injection and hostile inputs: nothing gan_lab writes is lost or silently wrong, and bad inputs
end before training in one line.

Damaged bytes inside a checkpoint and inside the decoded-data cache, an unreadable ``metrics.json``,
appends from several processes at once, a refused resume into the run's own directory (every file
of the run hashed before and after), SIGTERM after the weights went non-finite, time limits over
parts trained without one, and a table of bad inputs through the real command line (exit status 2,
one ``gan_lab: error:`` line, no traceback; the slower half of the table is marked slow).
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import signal
import warnings
import zipfile
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from gan_lab.callbacks.clock import trained_seconds
from gan_lab.callbacks.resume import epochs_completed
from gan_lab.compat import MID_EPOCH_RESUME_WARNING
from gan_lab.checkpoint_io import read_checkpoint
from gan_lab.data import ImageFolder
from gan_lab.errors import TrainingDiverged, UserError
from gan_lab.evaluate import evaluate
from gan_lab.fs import zip_damage
from gan_lab.metrics.records import append_evaluation, read_metrics_json, update_metrics_json
from gan_lab.run import check_top_level_keys, train
from gan_lab.runs import load_run
from tests.conftest import CONF, SMALL, TINY, compose_config, one_error_line, refused, run_cli, run_main
from tests.datasets import make_image_folder


def file_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def overwrite_inside(path: Path, nbytes: int) -> str:
    """Overwrite ``nbytes`` in the middle of the largest member of a zip file (a tensor's bytes),
    leaving the archive's structure intact; returns the member's name."""
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
        content = archive.read(info)
    raw = bytearray(path.read_bytes())
    start = raw.find(content)
    assert start >= 0 and len(content) > 2 * nbytes
    middle = start + len(content) // 2
    raw[middle:middle + nbytes] = bytes(b ^ 0xFF for b in raw[middle:middle + nbytes])
    path.write_bytes(bytes(raw))
    return info.filename


def compose_entry(name: str, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


# --- damaged files -----------------------------------------------------------------------------

def test_checkpoint_damaged_inside_is_one_sentence_before_the_first_batch(cli_run, tmp_path):
    damaged = tmp_path / "damaged.ckpt"
    shutil.copy(cli_run / "checkpoints" / "last.ckpt", damaged)
    member = overwrite_inside(damaged, 2048)
    torch.load(damaged, map_location="cpu", weights_only=False)  # the hazard: PyTorch reads it without a word
    with refused(f"ckpt_path={damaged}", member, "CRC-32"):
        read_checkpoint(damaged)
    resumed = tmp_path / "resumed"
    with refused(f"ckpt_path={damaged}", "another checkpoint"):
        train(compose_config([*SMALL, "trainer.max_epochs=3", f"ckpt_path={damaged}"], resumed))
    assert not (resumed / "checkpoints").exists()  # nothing trained
    with refused(f"ckpt={damaged}", "another checkpoint"):  # evaluate and generate
        load_run(cli_run, ckpt=damaged, device="cpu")


def test_damaged_data_cache_is_rebuilt_with_a_warning(tmp_path, caplog):
    root = make_image_folder(tmp_path / "folder")
    first = ImageFolder(root=str(root), image_size=16, batch_size=2)
    first.setup("fit")
    decoded = first.dataset("train").images.clone()
    (cache,) = (root / ".gan_lab_cache").glob("image_folder-train-16-*.pt")
    overwrite_inside(cache, 64)
    served = torch.load(cache, weights_only=True)["images"]  # the hazard: damaged pixels load silently
    assert not torch.equal(served, decoded)
    again = ImageFolder(root=str(root), image_size=16, batch_size=2)
    with caplog.at_level(logging.WARNING, logger="gan_lab"):
        again.setup("fit")
    assert f"cache {cache} is damaged" in caplog.text and "fails its CRC-32 check" in caplog.text
    assert torch.equal(again.dataset("train").images, decoded)  # rebuilt from the files
    assert zip_damage(cache) is None


def test_read_only_roots_keep_separate_fallback_caches(tmp_path, caplog):
    """Two copies of a dataset whose cache folders cannot be created: each caches in its own user
    folder, and building one never deletes the other's cache as stale."""
    roots = [make_image_folder(tmp_path / name) for name in ("a", "b")]
    (roots[1] / "cats" / "0.jpg").unlink()  # another file list: another cache key
    folders = []
    for root in roots:
        (root / ".gan_lab_cache").write_text("a file where the cache folder would go")  # unwritable, also for root
        dm = ImageFolder(root=str(root), image_size=16, batch_size=2)
        dm.setup("fit")
        folders.append(dm.cache_folder)
    assert folders[0] != folders[1] and all(".gan_lab_cache" not in str(f) for f in folders)
    for folder in folders:
        assert len(list(folder.glob("image_folder-train-16-*.pt"))) == 1, list(folder.iterdir())


# --- metrics.json -------------------------------------------------------------------------------

def test_unreadable_metrics_json_is_kept_aside_never_overwritten(tmp_path, caplog):
    path = tmp_path / "metrics.json"
    truncated = '{"status": "completed", "evaluations": [{"epoch": 1, "results": {"fid": '
    path.write_text(truncated)
    assert read_metrics_json(path) == {} and path.read_text() == truncated  # reading changes nothing
    with caplog.at_level(logging.WARNING, logger="gan_lab"):
        append_evaluation(path, {"epoch": 2})
    (aside,) = tmp_path.glob("metrics.json.unreadable-*")
    assert aside.read_text() == truncated
    assert json.loads(path.read_text()) == {"evaluations": [{"epoch": 2}]}
    assert aside.name in caplog.text and "could not be read" in caplog.text
    path.write_text("[1, 2]")  # valid JSON, but not gan_lab's object: kept aside too
    update_metrics_json(path, {"status": "completed"})
    assert len(list(tmp_path.glob("metrics.json.unreadable-*"))) == 2
    assert json.loads(path.read_text()) == {"status": "completed"}


def _append_many(path: str, writer: int, count: int) -> None:
    for i in range(count):
        append_evaluation(path, {"writer": writer, "i": i})
        if i % 10 == 0:
            update_metrics_json(path, {f"summary_{writer}": i})


def test_concurrent_appends_from_several_processes_lose_no_record(tmp_path):
    path = tmp_path / "metrics.json"
    update_metrics_json(path, {"status": "completed"})
    ctx = multiprocessing.get_context("fork")
    writers = [ctx.Process(target=_append_many, args=(str(path), w, 50)) for w in range(4)]
    for p in writers:
        p.start()
    for p in writers:
        p.join(60)
        assert p.exitcode == 0
    data = json.loads(path.read_text())
    records = {(r["writer"], r["i"]) for r in data["evaluations"]}
    assert len(data["evaluations"]) == 200 and records == {(w, i) for w in range(4) for i in range(50)}
    assert data["status"] == "completed" and all(data[f"summary_{w}"] == 40 for w in range(4))


# --- a refused resume changes nothing ------------------------------------------------------------

def test_refused_resume_into_the_same_directory_changes_no_file_of_the_run(cli_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    before = file_hashes(run)
    ckpt = run / "checkpoints" / "last.ckpt"
    res = run_cli(*SMALL, "trainer.max_epochs=3", "model.generator.width=4", f"ckpt_path={ckpt}",
                  f"hydra.run.dir={run}")
    one_error_line(res, f"ckpt_path={ckpt} ", ".hydra/overrides.yaml")
    assert file_hashes(run) == before
    res = run_cli(*SMALL, f"ckpt_path={ckpt}", f"hydra.run.dir={run}")  # nothing left to train
    one_error_line(res, "trainer.max_epochs=2", f"ckpt_path={ckpt} ", "2 epochs", "raise trainer.max_epochs")
    assert file_hashes(run) == before
    assert load_run(run, device="cpu").cfg.model.generator.width == 8  # still the run that was trained


# --- training state ------------------------------------------------------------------------------

def test_time_limit_counts_parts_trained_without_one(make_cfg, tmp_path):
    first = tmp_path / "first"
    train(make_cfg(*SMALL[len(TINY):], "trainer.max_epochs=1", "logger=none", run_dir=first))
    state = torch.load(first / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert trained_seconds(state) > 0 and not any("Timer" in k for k in state["callbacks"])
    state["callbacks"]["TrainingClock"]["train_seconds"] = 7200.0  # as after two hours without a limit
    long_ago = tmp_path / "two_hours.ckpt"
    torch.save(state, long_ago)
    with refused("trainer.max_time", "1:00:00", "ckpt_path=", "two_hours.ckpt", "2:00:00", "raise trainer.max_time"):
        train(make_cfg(*SMALL[len(TINY):], "trainer.max_time=00:01:00:00", f"ckpt_path={long_ago}",
                       "logger=none", run_dir=tmp_path / "spent"))
    assert not (tmp_path / "spent" / "checkpoints").exists()
    resumed = tmp_path / "resumed"
    train(make_cfg(*SMALL[len(TINY):], "trainer.max_time={hours:2,minutes:60}", f"ckpt_path={long_ago}", "logger=none",
                   run_dir=resumed))  # Lightning's mapping form of 3 hours
    after = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    timer = next(v for k, v in after["callbacks"].items() if "Timer" in k)
    assert 7200 < timer["time_elapsed"]["train"] < 7300
    assert 7200 < after["callbacks"]["TrainingClock"]["train_seconds"] < 7300


def test_exact_mid_epoch_resume_does_not_warn_that_it_is_unreliable(make_cfg, tmp_path):
    cut = tmp_path / "cut"
    train(make_cfg(*SMALL[len(TINY):], "trainer.max_batches=2", "logger=none", run_dir=cut))  # 2 of 3 batches
    ckpt = cut / "checkpoints" / "last.ckpt"
    assert epochs_completed(torch.load(ckpt, map_location="cpu", weights_only=False)) == (0, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(make_cfg(*SMALL[len(TINY):], "trainer.max_batches=4", f"ckpt_path={ckpt}", "logger=none",
                       run_dir=tmp_path / "resumed"))
        assert not [f for f in warnings.filters if f[1] is not None and f[1].pattern == MID_EPOCH_RESUME_WARNING]  # scoped
    assert not [w for w in caught if "not resumable" in str(w.message)]


class PoisonThenSignal(L.Callback):
    """Fault injection: after batch ``batch`` a generator weight becomes NaN and SIGTERM arrives."""

    def __init__(self, batch: int = 1) -> None:
        self.batch = batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.batches_seen == self.batch:
            with torch.no_grad():
                next(pl_module.generator.parameters()).fill_(float("nan"))
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_after_weights_went_non_finite_records_diverged(make_cfg, tmp_path):
    run = tmp_path / "run"
    poison = ["+callbacks.poison._target_=tests.test_reliability.PoisonThenSignal", "+callbacks.poison.batch=2"]
    with refused("batch 2", "weights=nan", "SIGTERM", "no checkpoint", error=TrainingDiverged):
        train(make_cfg(*SMALL[len(TINY):], *poison, "logger=none", run_dir=run))
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "diverged" and summary["diverged"]["batch"] == 2
    assert not (run / "checkpoints" / "last.ckpt").exists()


def test_epoch_numbers_are_completed_epochs_in_training_and_evaluate(make_cfg, tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    cfg = make_cfg(*SMALL[len(TINY):], "logger=none", "callbacks=with_metrics", "callbacks.metrics.every_n_epochs=1",
                   "callbacks.metrics.evaluator.metrics=[scores]", "callbacks.metrics.evaluator.num_samples=16",
                   run_dir=run)
    saved = cfg.copy()
    saved.run_dir, saved.run_name = "${hydra:runtime.output_dir}", "test"
    OmegaConf.save(saved, run / ".hydra" / "config.yaml")
    train(cfg)
    during = [e["epoch"] for e in json.loads((run / "metrics.json").read_text())["evaluations"]]
    scored = evaluate(compose_entry("evaluate", f"run_dir={run}", "metrics=[scores]", "num_samples=16", "device=cpu"))
    assert during == [1, 2] and scored["epoch"] == 2 and "batch_in_epoch" not in scored  # the same weights: 2
    # a mid-epoch checkpoint (trainer.max_batches inside epoch 0): 0 epochs completed, 2 batches into the next
    cut = tmp_path / "cut"
    shutil.copytree(run / ".hydra", cut / ".hydra")
    train(make_cfg(*SMALL[len(TINY):], "logger=none", "trainer.max_batches=2", run_dir=cut))
    assert json.loads((cut / "metrics.json").read_text())["epochs"] == 0
    scored = evaluate(compose_entry("evaluate", f"run_dir={cut}", "metrics=[scores]", "num_samples=16", "device=cpu"))
    assert (scored["epoch"], scored["batch_in_epoch"]) == (0, 2)


# --- bad inputs, before training ------------------------------------------------------------------

def test_sizes_are_checked_against_the_nets_before_any_image_is_decoded(make_cfg, tmp_path):
    root = make_image_folder(tmp_path / "folder")
    with refused("image_size=1024", "DCGAN generator", "16, 32, 64, 128, 256"):
        train(make_cfg("data=image_folder", f"data.root={root}", "data.image_size=1024", "data.batch_size=2"))
    assert not (root / ".gan_lab_cache").exists()  # nothing decoded at 1024 px


def test_a_last_batch_of_one_image_is_refused_for_batchnorm1d_nets(make_cfg):
    # 1617 training digits in batches of 2 leave one image for the last batch
    with refused("data.drop_last=false", "1617", "data.batch_size=2", "BatchNorm1d", "model.generator",
                 "data.drop_last=true"):
        train(make_cfg("model=cgan_mlp", "data.batch_size=2", "data.drop_last=false",
                       "trainer.limit_train_batches=null"))


def test_top_level_keys_no_config_defines_are_refused_and_presets_pass():
    cfg = compose_config(["+lr=0.1"])
    with refused("+lr=0.1", "optimizer.discriminator.lr", "optimizer.generator.lr"):
        check_top_level_keys(cfg, ["+lr=0.1"])
    for preset in sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")):
        check_top_level_keys(compose_config([f"experiment={preset}"]), [f"experiment={preset}"])
    check_top_level_keys(compose_config(["hparams_search=optuna"]), ["hparams_search=optuna"])


def bad_input(*args: str, module: str = "gan_lab.run", named: tuple[str, ...] = (), **kw):
    return pytest.param(module, list(args), named, **kw)


#: (entry point, arguments, what the one line names); {run} is a trained run, {tmp} the test's folder
CLI_CASES = {
    "absurd image size": bad_input("data.image_size=100000", named=("data.image_size=100000", "4096")),
    "batch of one, BatchNorm1d": bad_input("model=cgan_mlp", "data.batch_size=1",
                                           named=("data.batch_size=1", "model.generator", "BatchNorm1d")),
    "zero width": bad_input("model.generator.width=0", named=("model.generator.width=0 must be ",)),
    "seed not a number": bad_input("seed=abc", named=("seed='abc'", "seed=0")),
    "negative val_fraction": bad_input("data.val_fraction=-0.1", named=("data.val_fraction=-0.1 must be ",)),
    "zero epochs": bad_input("trainer.max_epochs=0", named=("trainer.max_epochs=0", "trainer.max_epochs>=1")),
    "top-level key nothing reads": bad_input("+lr=0.1", named=("+lr=0.1", "optimizer.discriminator.lr")),
    "generate zero samples": bad_input("run_dir={run}", "num_samples=0", module="gan_lab.generate",
                                       named=("num_samples=0", "num_samples=64")),
    "evaluate, mistyped run_dir": bad_input("run_dir={tmp}/nowhere", module="gan_lab.evaluate",
                                            named=("run_dir={tmp}/nowhere", ".hydra/config.yaml", "no such folder")),
    "dense WGAN generator, batch of one": bad_input(
        "model=wgan_gp", "model/generator=dense_dcgan", "data.batch_size=1",
        named=("data.batch_size=1", "model.generator", "data.batch_size>=2")),
    "negative width": bad_input("model.discriminator.width=-1", named=("model.discriminator.width=-1 must be ",)),
    "zero hidden size": bad_input("model=cgan_mlp", "model.generator.hidden=[0,4]",
                                  named=("model.generator.hidden=[0,4] must be ",)),
    "fractional seed": bad_input("seed=1.5", named=("seed=1.5 must be an integer",)),
    "val_fraction above 1": bad_input("data.val_fraction=1.5", named=("data.val_fraction=1.5 must be ",)),
    "no batches per epoch": bad_input("trainer.limit_train_batches=0",
                                      named=("trainer.limit_train_batches=0 must be ",)),
    "share of an epoch below one batch": bad_input("trainer.limit_train_batches=0.0001",
                                                   named=("trainer.limit_train_batches=0.0001", "25 batches",
                                                          "trainer.limit_train_batches=1")),
    "unknown top-level key": bad_input("+foo=1", named=("+foo=1", "top-level key foo", "drop it")),
    "directory as ckpt_path": bad_input("ckpt_path={run}",
                                        named=("ckpt_path={run} ", "ckpt_path={run}/checkpoints/last.ckpt")),
    "generate, negative per_class": bad_input("run_dir={run}", "per_class=-1", module="gan_lab.generate",
                                              named=("per_class=-1 must be an integer >= 1",)),
    "generate, num_samples not a number": bad_input("run_dir={run}", "num_samples=abc", module="gan_lab.generate",
                                                    named=("num_samples='abc' must be an integer >= 1",)),
    "evaluate, no run_dir": bad_input(module="gan_lab.evaluate", named=("run_dir is not set",)),
}


@pytest.mark.parametrize("module,args,named", list(CLI_CASES.values()), ids=list(CLI_CASES))
def test_bad_input_is_one_line_and_exit_status_2(module, args, named, cli_run, tmp_path, capsys, monkeypatch):
    fill = {"run": str(cli_run), "tmp": str(tmp_path)}
    args = [a.format(**fill) for a in args]
    before = sorted(p.name for p in tmp_path.iterdir())
    extra = [*TINY, f"hydra.run.dir={tmp_path / 'run'}"] if module == "gan_lab.run" else []
    monkeypatch.chdir(tmp_path)
    res = run_main(module, *extra, *args, capsys=capsys)
    one_error_line(res, *(n.format(**fill) for n in named))
    if module == "gan_lab.run":
        assert not (tmp_path / "run" / "checkpoints").exists()  # refused before training
    else:  # no folder made for a mistyped or missing run_dir (nor ./outputs)
        assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_each_entry_point_accepts_its_own_top_level_keys_only():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    for entry in ("explore", "evaluate", "generate"):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name=entry)
        own = sorted(set(cfg) - set(compose_config()))
        assert own, entry  # each entry point has keys of its own (e.g. explore.samples)
        check_top_level_keys(cfg, [], entry)
        with pytest.raises(UserError, match=f"adds the top-level key {own[0]}"):
            check_top_level_keys(cfg, [], "config")  # what training would say of them


def test_files_written_atomically_get_the_permissions_open_would_give(tmp_path):
    from gan_lab.fs import atomic_write

    atomic_write(tmp_path / "metrics.json", lambda fh: fh.write(b"{}"))
    (tmp_path / "plain.json").write_bytes(b"{}")
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == (tmp_path / "plain.json").stat().st_mode & 0o777
