"""Every number a config gives to a ``_target_`` has a declared range (gan_lab/constraints.py), a bad
value is refused in one sentence before training, and the sentence's words and example are right."""
from __future__ import annotations

import collections.abc
import inspect
import math
import re
import types
import typing
from typing import Annotated, Any, Literal, Sequence

import annotated_types as at
import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_object
from pydantic import Field

from gan_lab.build import build_callbacks, build_datamodule, build_model, build_trainer
from gan_lab.constraints import (AnyFloat, AnyInt, Count, Fraction, NonNegative, NonNegativeInt, Positive,
                                 Probability, Unbounded, argument_defaults, argument_hints, describe, example, fits)
from gan_lab.errors import UserError
from tests.conftest import CONF

_UNIONS = (typing.Union, types.UnionType)
_CONTAINERS = (list, tuple, collections.abc.Sequence)
_MARKS = (at.Ge, at.Gt, at.Le, at.Lt, at.Interval, Unbounded)


def conf_targets() -> list[str]:
    """Every ``_target_`` named in a yaml under conf/ (interpolated ones left out)."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            target = node.get("_target_")
            if isinstance(target, str) and "${" not in target:
                found.add(target)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in sorted(CONF.rglob("*.yaml")):
        walk(yaml.safe_load(path.read_text()))
    return sorted(found)


TARGETS = conf_targets()


def hints_of(target: str) -> dict[str, Any]:
    return argument_hints(get_object(target), target)


def _flat(meta: Sequence[Any]) -> list:
    flat = []
    for m in meta:
        flat.extend(getattr(m, "metadata", None) or [m])
    return flat


def undeclared(hint: Any) -> bool:
    """Whether a hint admits an int or a float that declares neither a bound nor UNBOUNDED (looking inside
    Annotated, Optional/Union, lists, sequences and tuples)."""
    if typing.get_origin(hint) is Annotated:
        base, *meta = typing.get_args(hint)
        if base in (int, float):
            return not any(isinstance(m, _MARKS) for m in _flat(meta))
        return undeclared(base)
    if hint in (int, float):
        return True
    origin = typing.get_origin(hint)
    if origin in _UNIONS or origin in _CONTAINERS or hint in _CONTAINERS:
        return any(undeclared(a) for a in typing.get_args(hint) if a is not Ellipsis)
    return False


def admits_numbers(hint: Any) -> bool:
    if hint in (int, float):
        return True
    origin = typing.get_origin(hint)
    if origin is Annotated:
        return admits_numbers(typing.get_args(hint)[0])
    if origin in _UNIONS or origin in _CONTAINERS:
        return any(admits_numbers(a) for a in typing.get_args(hint) if a is not Ellipsis)
    return False


# --- (a) every numeric argument of every configured target declares its range ---------------------------------

def test_conf_names_targets():
    assert len(TARGETS) > 50 and "gan_lab.noise.Normal" in TARGETS and "torch.optim.Adam" in TARGETS


def test_every_numeric_argument_of_every_target_declares_its_range():
    missing = [f"{target}.{key}" for target in TARGETS for key, hint in hints_of(target).items()
               if undeclared(hint)]
    assert missing == [], f"{len(missing)} numeric arguments without a declared range: {missing}"


def test_the_walker_sees_what_is_undeclared():
    assert undeclared(int) and undeclared(float | None) and undeclared(Sequence[float])
    assert undeclared(tuple[Probability, float]) and undeclared(Annotated[list[int], Field(min_length=1)])
    assert not undeclared(Count) and not undeclared(AnyFloat | None) and not undeclared(list[Probability])
    assert not undeclared(str) and not undeclared(bool) and not undeclared(Literal[1, 2])


# --- (b) bad values refused in one sentence before training ---------------------------------------------------

def _model(cfg):
    build_datamodule(cfg, setup=False)  # publishes the data's facts (channels, classes) the nets take
    return build_model(cfg)


def _callbacks(cfg):
    return build_callbacks(cfg)


def _data(cfg):
    return build_datamodule(cfg, setup=False)


def _trainer(cfg):
    return build_trainer(cfg, [], [])


REFUSED = [
    (["optimizer.generator.betas=[0.5]"], _model, "optimizer.generator.betas=[0.5]"),
    (["optimizer.generator.betas=[]"], _model, "optimizer.generator.betas=[]"),
    (["optimizer=rmsprop", "optimizer.discriminator.alpha=2.0"], _model, "optimizer.discriminator.alpha=2.0"),
    (["noise.std=inf"], _model, "noise.std=inf"),
    (["noise.mean=inf"], _model, "noise.mean=inf"),
    (["noise=uniform", "noise.low=-inf", "noise.high=inf"], _model, "noise.low=-inf"),
    (["loss.discriminator.real_target=nan"], _model, "loss.discriminator.real_target=nan"),
    (["loss.discriminator.real_target=5.0"], _model, "loss.discriminator.real_target=5.0"),
    (["callbacks.sample_grid.every_n_epochs=0"], _callbacks, "callbacks.sample_grid.every_n_epochs=0"),
    (["callbacks.sample_grid.every_n_epochs=-1"], _callbacks, "callbacks.sample_grid.every_n_epochs=-1"),
    (["callbacks.ema.half_life_images=nan"], _callbacks, "callbacks.ema.half_life_images=nan"),
    (["callbacks.last_checkpoint.every_n_epochs=0"], _callbacks, "callbacks.last_checkpoint.every_n_epochs=0"),
    (["trainer.log_every_n_steps=-1"], _trainer, "trainer.log_every_n_steps=-1"),
    (["data=pokemon", "data.decode_workers=-1"], _data, "data.decode_workers=-1"),
    (["data=pokemon", "data.types=[]"], _data, "data.types=[]"),
    (["callbacks.last_checkpoint.save_top_k=0"], _callbacks, "callbacks.last_checkpoint.save_top_k=0"),
    (["model.n_critic=0"], _model, "model.n_critic=0"),
    (["data.subset=1.0"], _data, "data.subset=1.0"),
    (["model=cgan_mlp", "model.generator.hidden=[16,16.0]"], _model, "model.generator.hidden=[16,16.0]"),
]


@pytest.mark.parametrize("overrides,build,refused", REFUSED, ids=[" ".join(c[0]) for c in REFUSED])
def test_bad_value_is_refused_in_one_sentence(make_cfg, overrides, build, refused):
    cfg = make_cfg(*overrides)
    with pytest.raises(UserError) as caught:
        build(cfg)
    message = str(caught.value)
    key = refused.split("=", 1)[0]
    assert message.startswith(f"{refused} must be "), message
    assert re.fullmatch(rf"{re.escape(refused)} must be [^;]+ for \w+; e\.g\. {re.escape(key)}=\S+\.", message), message
    assert "\n" not in message


@pytest.mark.parametrize("overrides,build,refused", REFUSED, ids=[" ".join(c[0]) for c in REFUSED])
def test_the_proposed_value_is_not_refused(make_cfg, overrides, build, refused):
    """A refusal's ``e.g.`` value, given instead of the refused one, is not refused."""
    with pytest.raises(UserError) as caught:
        build(make_cfg(*overrides))
    key = refused.split("=", 1)[0]
    proposed = re.search(r"; e\.g\. (\S+)\.$", str(caught.value)).group(1)
    try:
        build(make_cfg(*[proposed if o.startswith(key + "=") else o for o in overrides]))
    except UserError as exc:  # another key's value, or data that is not there: not this key
        assert f"{key}=" not in str(exc).split(" must be ")[0], str(exc)


# --- (c) the words, the examples and the check of known hints --------------------------------------------------

@pytest.mark.parametrize("hint,words", [
    (Probability | None, "a number in [0, 1] or null"),
    (Count, "an integer >= 1"),
    (NonNegativeInt, "an integer >= 0"),
    (Positive, "a number > 0"),
    (NonNegative | None, "a number >= 0 or null"),
    (Fraction, "a number in (0, 1)"),
    (AnyFloat, "a finite number"),
    (AnyInt, "an integer"),
    (float, "a finite number"),
    (tuple[Probability, Probability], "a list of 2 numbers in [0, 1]"),
    (Annotated[Sequence[str], Field(min_length=1)] | None, "a list of one or more strings or null"),
    (Sequence[Count] | Count, "a list of integers >= 1 or an integer >= 1"),
    (Literal[-1] | Count, "one of -1 or an integer >= 1"),
])
def test_describe(hint, words):
    assert describe(hint) == words


@pytest.mark.parametrize("hint,low,high", [
    (Probability, 0, 1), (Fraction, 0, 1), (Count, 1, math.inf), (NonNegativeInt, 0, math.inf),
    (Positive, 0, math.inf), (Annotated[float, Field(gt=0, le=1)], 0, 1), (Annotated[float, Field(ge=0, lt=1)], 0, 1),
])
def test_example_lies_in_the_range(hint, low, high):
    value = example(hint)
    assert low <= value <= high and fits(value, hint)


def test_example_prefers_a_fitting_default():
    assert example(Count, 64) == 64
    assert example(Count, 0) == 1  # a default outside the range is not proposed
    assert example(Probability | None, None) == 0.5


@pytest.mark.parametrize("value,hint,ok", [
    (2, int, True), (2.0, int, False), ("5", int, False), (True, int, False), (True, Count, False),
    (1, float, True), (math.nan, float, False), (math.inf, float, False), (math.inf, AnyFloat, False),
    (-1e30, AnyFloat, True), (0, Count, False), (0, NonNegativeInt, True), (0.0, Positive, False),
    (1.0, Probability, True), (1.0, Fraction, False), (None, Probability | None, True), (None, Probability, False),
    ([0.5], tuple[Probability, Probability], False), ([0.5, 0.9], tuple[Probability, Probability], True),
    ([], Annotated[Sequence[str], Field(min_length=1)] | None, False), ([1, 0], Sequence[Count], False),
    ([1, 2.0], Sequence[Count], False), ([1, "5"], Sequence[Count], False), ([0.5, "0.9"], tuple[float, float], False),
    ([[1, 2], [3, 4]], list[tuple[int, int]], True), ([[1, 2.5]], list[tuple[int, int]], False),
    ({"a": 1.5}, dict[str, int], False), ({"a": [1, 2]}, dict[str, tuple[int, int]], True),
])
def test_fits(value, hint, ok):
    assert fits(value, hint) is ok


# --- (d) every example a refusal proposes fits its own declaration ---------------------------------------------

def _parsed(text: Any) -> Any:
    """A proposed ``key=value`` value as the command line would give it."""
    value = OverridesParser.create().parse_override(f"key={text}").value()
    return list(value) if isinstance(value, (list, tuple)) else value


def test_every_proposed_example_fits():
    wrong = []
    for target in TARGETS:
        obj = get_object(target)
        defaults = argument_defaults(obj)
        for key, hint in argument_hints(obj, target).items():
            if not admits_numbers(hint):
                continue
            for default in (inspect.Parameter.empty, defaults.get(key, inspect.Parameter.empty)):
                proposed = example(hint, default)
                if not fits(_parsed(proposed), hint):
                    wrong.append(f"{target}.{key}={proposed} ({describe(hint)})")
    assert wrong == []
