"""Declared constraints of the arguments config nodes give to their ``_target_``.

Pydantic annotations (``Annotated[float, Field(ge=0, le=1)]`` or an alias below), or :data:`EXTERNAL` for
other libraries; :func:`fits` checks a value, :func:`describe` and :func:`example` word the refusal.
"""
from __future__ import annotations

import collections.abc
import functools
import inspect
import types
import typing
from typing import Annotated, Any

import annotated_types as at
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError

from gan_lab.errors import UserError


class Unbounded:
    """Marks a number whose every finite value is meaningful (a seed, a mean)."""

    def __repr__(self) -> str:
        return "Unbounded()"


UNBOUNDED = Unbounded()

Count = Annotated[int, Field(ge=1)]                  #: 1, 2, 3, ...
NonNegativeInt = Annotated[int, Field(ge=0)]         #: 0, 1, 2, ...
AnyInt = Annotated[int, UNBOUNDED]
Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Probability = Annotated[float, Field(ge=0, le=1)]    #: also a rate in [0, 1]
Fraction = Annotated[float, Field(gt=0, lt=1)]       #: strictly between 0 and 1
AnyFloat = Annotated[float, UNBOUNDED]               #: any finite number

_CONFIG = ConfigDict(arbitrary_types_allowed=True, allow_inf_nan=False)
_ADAM_BETA = Annotated[float, Field(ge=0, lt=1)]

#: constraints of the arguments of other libraries' targets, by ``_target_``
EXTERNAL: dict[str, dict[str, Any]] = {
    "torch.optim.Adam": {"lr": Positive, "betas": tuple[_ADAM_BETA, _ADAM_BETA], "eps": Positive,
                         "weight_decay": NonNegative},
    "torch.optim.RMSprop": {"lr": Positive, "alpha": Annotated[float, Field(gt=0, le=1)], "eps": Positive,
                            "weight_decay": NonNegative, "momentum": NonNegative},
    "torch.optim.SGD": {"lr": Positive, "momentum": NonNegative, "dampening": Probability, "weight_decay": NonNegative},
    "lightning.pytorch.Trainer": {
        "devices": Count | typing.Literal[-1] | list[NonNegativeInt] | str, "num_nodes": Count,
        "max_epochs": Annotated[int, Field(ge=-1)] | None, "min_epochs": NonNegativeInt | None,
        "max_steps": Annotated[int, Field(ge=-1)], "min_steps": NonNegativeInt | None,
        "limit_train_batches": Count | Annotated[float, Field(gt=0, le=1)] | None,
        "limit_val_batches": NonNegativeInt | Probability | None,
        "limit_test_batches": NonNegativeInt | Probability | None,
        "limit_predict_batches": NonNegativeInt | Probability | None,
        "overfit_batches": NonNegativeInt | Probability, "val_check_interval": Count | Probability | None,
        "check_val_every_n_epoch": Count | None, "num_sanity_val_steps": Annotated[int, Field(ge=-1)] | None,
        "log_every_n_steps": Count | None, "fast_dev_run": bool | NonNegativeInt,
        "reload_dataloaders_every_n_epochs": NonNegativeInt, "accumulate_grad_batches": Count,
        "gradient_clip_val": NonNegative | None,
    },
    "lightning.pytorch.callbacks.TQDMProgressBar": {"refresh_rate": NonNegativeInt, "process_position": NonNegativeInt},
    "lightning.pytorch.loggers.TensorBoardLogger": {"version": NonNegativeInt | str | None},
    "optuna.samplers.TPESampler": {"prior_weight": Positive, "n_startup_trials": NonNegativeInt,
                                   "n_ei_candidates": Count, "seed": AnyInt | None},
}


def check_value(value: Any, hint: Any, key: str, shown_example: Any = None) -> Any:
    """``value`` when it fits its declared type ``hint``, else a :class:`UserError` naming ``key``, the value and an
    example (``shown_example``, or one made from ``hint``)."""
    if fits(value, hint):
        return value
    raise refusal(key, value, hint, example(hint) if shown_example is None else shown_example)


def refusal(key: str, value: Any, hint: Any, shown_example: Any, owner: str | None = None) -> UserError:
    """The one sentence refusing ``key=value``: what its declared type ``hint`` asks (of ``owner``, the target
    taking it) and an example."""
    shown = "[" + ",".join(map(str, value)) + "]" if isinstance(value, list) else repr(value)
    of = f" for {owner}" if owner else ""
    return UserError(f"{key}={shown} must be {describe(hint)}{of}; e.g. {key}={shown_example}.")


def _init_functions(target: Any) -> list:
    return [c.__init__ for c in target.__mro__ if "__init__" in vars(c)] if isinstance(target, type) else [target]


def argument_hints(target: Any, name: str | None = None) -> dict[str, Any]:
    """The declared type of each argument of a class (``__init__`` along the MRO) or function, with
    :data:`EXTERNAL`'s constraints (``name``: the ``_target_`` it was found by)."""
    hints: dict[str, Any] = {}
    for fn in _init_functions(target):
        try:
            fn_hints = typing.get_type_hints(fn, include_extras=True)
            params = inspect.signature(fn).parameters
        except Exception:  # noqa: BLE001 - unresolvable annotations: nothing to check against
            continue
        for key, hint in fn_hints.items():
            if key in params:
                hints.setdefault(key, hint)
    path = name or f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}"
    return {**hints, **EXTERNAL.get(path, {})}


def argument_defaults(target: Any) -> dict[str, Any]:
    """The default value of each argument of a class (along the MRO) or function that has one."""
    defaults: dict[str, Any] = {}
    for fn in _init_functions(target):
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            continue
        for key, param in params.items():
            if param.default is not inspect.Parameter.empty:
                defaults.setdefault(key, param.default)
    return defaults


@functools.lru_cache(maxsize=None)
def _adapter(hint: Any) -> TypeAdapter | None:
    try:
        return TypeAdapter(hint, config=_CONFIG)
    except Exception:  # noqa: BLE001 - a hint pydantic cannot express (a protocol, a callable): not checked
        return None


def fits(value: Any, hint: Any) -> bool:
    """Whether a config value satisfies a declared type (floats finite; a hint pydantic cannot check: yes)."""
    try:
        adapter = _adapter(hint)
    except TypeError:  # unhashable metadata
        adapter = TypeAdapter(hint, config=_CONFIG)
    if adapter is None:
        return True
    try:  # strictly, items too (2.0 is not an integer, "5" not a number)
        adapter.validate_python(_shaped(value, hint), strict=True)
    except ValidationError:
        return False
    return True


def _shaped(value: Any, hint: Any) -> Any:
    """``value`` with each list that fills a declared tuple made a tuple (a config has lists only)."""
    base, _ = _split(hint)
    origin, args = typing.get_origin(base), typing.get_args(base)
    if origin in (typing.Union, types.UnionType):
        return next((shaped for a in args if (shaped := _shaped(value, a)) is not value), value)
    if isinstance(value, (list, tuple)) and (origin in _SEQUENCES or base in _SEQUENCES):
        fixed = (origin is tuple or base is tuple) and args and Ellipsis not in args
        items = [_shaped(v, args[i] if fixed and i < len(args) else args[0] if args else Any)
                 for i, v in enumerate(value)]
        return tuple(items) if tuple in (origin, base) else items
    if isinstance(value, dict) and len(args) == 2 and (origin in _MAPPINGS or base in _MAPPINGS):
        return {k: _shaped(v, args[1]) for k, v in value.items()}
    return value


def _split(hint: Any) -> tuple[Any, list]:
    """``Annotated[base, *metadata]`` -> (base, metadata as a flat list of annotated_types constraints and markers)."""
    if typing.get_origin(hint) is not Annotated:
        return hint, []
    base, *meta = typing.get_args(hint)
    # a pydantic Field carries its constraints as metadata
    return base, [c for m in meta for c in getattr(m, "metadata", None) or [m]]


_SEQUENCES = (list, tuple, collections.abc.Sequence)
_MAPPINGS = (dict, collections.abc.Mapping)
_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}
_PLURAL = {int: "integers", float: "numbers", bool: "true/false values", str: "strings"}
_SIGNS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _bounds(meta: list) -> dict[str, float]:
    return {k: getattr(m, k) for m in meta if isinstance(m, (at.Ge, at.Gt, at.Le, at.Lt, at.Interval))
            for k in _SIGNS if getattr(m, k, None) is not None}


def _range_words(bounds: dict[str, float]) -> str:
    low = ("[", bounds["ge"]) if "ge" in bounds else ("(", bounds["gt"]) if "gt" in bounds else None
    high = (bounds["le"], "]") if "le" in bounds else (bounds["lt"], ")") if "lt" in bounds else None
    if low and high:
        return f"in {low[0]}{low[1]:g}, {high[0]:g}{high[1]}"
    return " and ".join(f"{_SIGNS[k]} {v:g}" for k, v in bounds.items())


def describe(hint: Any, plural: bool = False) -> str:
    """Words for a declared type: ``Annotated[float, Field(ge=0, le=1)] | None`` -> 'a number in [0, 1] or null'."""
    base, meta = _split(hint)
    origin = typing.get_origin(base)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(describe(a, plural) for a in typing.get_args(base)))
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, typing.get_args(base)))
    if origin in _SEQUENCES or base in _SEQUENCES:
        args = [a for a in typing.get_args(base) if a is not Ellipsis]
        lengths = {m.min_length for m in meta if isinstance(m, at.MinLen)}
        if origin is tuple and args and Ellipsis not in typing.get_args(base):
            head = f"a list of {len(args)}"
        else:
            least = min(lengths, default=0)
            head = {0: "a list of", 1: "a list of one or more"}.get(least, f"a list of at least {least}")
        return f"{head} {describe(args[0], plural=True)}" if args else "a list"
    if origin in _MAPPINGS or base in _MAPPINGS:
        return "a mapping"
    words = (_PLURAL if plural else _NAMES).get(base) or getattr(base, "__name__", str(base))
    if bounds := _bounds(meta):
        return f"{words} {_range_words(bounds)}"
    if base is float:
        return "finite numbers" if plural else "a finite number"
    return words


def example(hint: Any, default: Any = inspect.Parameter.empty) -> Any:
    """A value that fits the declared type, for the refusal's ``e.g. key=value`` (the default when it fits)."""
    if isinstance(default, (int, float, str, bool)) and default != "" and fits(default, hint):
        return str(default).lower() if isinstance(default, bool) else default
    base, meta = _split(hint)
    origin = typing.get_origin(base)
    if origin in (typing.Union, types.UnionType):
        found = [example(a) for a in typing.get_args(base) if a is not type(None)]
        return next((e for e in found if e != "..."), "...")
    if origin is typing.Literal:
        return typing.get_args(base)[0]
    if origin is tuple and typing.get_args(base) and Ellipsis not in typing.get_args(base):
        return "[" + ",".join(str(example(a)) for a in typing.get_args(base)) + "]"
    if origin in _SEQUENCES or base in _SEQUENCES:
        args = [a for a in typing.get_args(base) if a is not Ellipsis]
        item = example(args[0]) if args else "a"
        return f"[{item},{item}]"
    if origin in _MAPPINGS or base in _MAPPINGS:
        return "{key:value}"
    if base in (int, float):
        b = _bounds(meta)
        low, high = b.get("ge", b.get("gt")), b.get("le", b.get("lt"))
        if low is not None and high is not None:
            value = (low + high) / 2
        elif low is not None:
            value = low if "ge" in b and low != 0 else low + 1
        elif high is not None:
            value = high if "le" in b else high - 1
        else:
            value = 1
        return int(value) if base is int else float(value)
    return {bool: "true", str: "name"}.get(base, "...")
