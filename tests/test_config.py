"""Every option of every config group composes; objects build from each."""
from __future__ import annotations

import pytest
from hydra.utils import instantiate

from gan_lab.build import build_datamodule, build_model
from tests.conftest import CONF, compose_config

GROUPS = ["model", "data", "loss", "optimizer", "scheduler", "noise", "trainer", "logger", "callbacks",
          "experiment"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


CASES = [(g, o) for g in GROUPS for o in options(g)]


def test_every_group_has_options():
    assert all(options(g) for g in GROUPS)


@pytest.mark.parametrize("group,option", CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_composes_and_builds(group, option, tmp_path):
    cfg = compose_config([f"{group}={option}"], tmp_path)
    if group != "experiment":  # experiments are `@package _global_` overrides
        assert group in cfg
    if group in ("noise", "loss"):
        assert instantiate(cfg[group]) is not None
    if cfg.data._target_ == "gan_lab.data.Digits":
        # the bundled data is always there: build the DataModule and the whole model
        build_datamodule(cfg)
        model = build_model(cfg)
        opts, _ = model.configure_optimizers()
        assert len(opts) == 2


@pytest.mark.parametrize("optimizer", ["adam", "adam_wgan_gp", "adam_pggan"])
def test_fused_adam_is_a_config_key(optimizer, tmp_path):
    cfg = compose_config([f"optimizer={optimizer}", "optimizer.discriminator.fused=true"], tmp_path)
    build_datamodule(cfg)  # publishes channels and classes into cfg, as a run does
    opt_d, opt_g = build_model(cfg).configure_optimizers()[0]
    assert opt_d.defaults["fused"] is True and opt_g.defaults["fused"] is None  # null: torch's choice
