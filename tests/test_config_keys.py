"""No config key is silently ignored: changing any key of a model (or of a loss, optimizer, scheduler
or noise option) either changes what a short training run records or is refused in one sentence.

For every model, each leaf key under ``model``, ``loss``, ``optimizer``, ``scheduler`` and ``noise`` is
changed in turn (a few candidate values per key, see :func:`candidates`) and a tiny run of one
epoch of two batches is trained. What the run records is its weights and buffers, its optimiser
state (learning rates included), the last logged values and the sample grid's layout. A key passes
when one of its candidate values changes that record or raises a :class:`UserError`; a key none of
whose values does either is ignored, and the test names it (a refusal counts only when its sentence
names the key).

Exempt (listed with the reason): keys that describe rather than compute (``loss.name``) and keys
about how rather than what (``fused``). The runs include the callbacks that change what a model
trains or keeps (``callbacks.growth``, which ``model=pggan`` brings, and ``callbacks.ema``); the EMA's
key is walked like a model key, the growth schedule's keys act over more images than two batches
(``tests/test_pggan.py`` checks them).
"""
from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf

from gan_lab.build import build_datamodule, build_model, instantiate_checked, serve_draws
from gan_lab.errors import UserError
from tests.conftest import CONF, compose_config, NARROW_NETS

BASE = ["trainer=debug", "noise.latent_dim=8", "data.image_size=16", "data.batch_size=8", "callbacks=default"]
NARROW = NARROW_NETS
#: keys that are exempt, and why
EXEMPT = {
    "loss.name": "the objective's name, used in messages and by models that need a given objective",
    "loss.probability": "how D's output is read for the logged D(x); checked by tests/test_losses_noise.py",
    "loss.needs_lipschitz": "whether a critic without a Lipschitz constraint is warned of; checked by tests/test_wgan.py",
    "fused": "how the optimizer runs (one fused kernel), not what it computes",
    "critic_warmup.first": "acts after more generator updates than two batches make; tests/test_wgan.py checks it",
    "critic_warmup.every": "acts after more generator updates than two batches make; tests/test_wgan.py checks it",
}
#: callbacks that change what a run trains or keeps: built for every recorded run when configured
TRAINING_CALLBACKS = ("growth", "ema")
#: values to try for keys whose default is null or a word
WORDS = {
    "norm": ["none", "instance"], "output": ["sigmoid"], "conditioning": ["branch"], "label_encoding": ["embedding"],
    "reconstruction_updates": ["discriminator"], "extra_g_when": ["d_loss"], "init": ["dcgan"],
    "instance_noise_on": ["real", "real_and_fake"], "activation": ["relu", "leaky_relu"],
    # ADA's operations without the orientation ones (the last of the list, saturation, acts on colour
    # images only: the tests' digits are grey)
    "ops": [["xint", "scale", "aniso", "xfrac", "brightness", "contrast"]],
}


def candidates(key: str, value):
    """A few other values for ``key`` (the last part of a dotted path)."""
    name = key.rsplit(".", 1)[-1]
    if name in WORDS:
        return [w for w in WORDS[name] if w != value]
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [v for v in (value + 1, 1, 2 * value + 3) if v != value]
    if isinstance(value, float):
        return [v for v in (round(value * 0.5 + 0.1, 6), round(value + 0.05, 6)) if v != value]
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return [[value[0] * 0.5 + (0.1 if isinstance(value[0], float) else 1)] + value[1:]]
    if isinstance(value, list) and len(value) > 1 and all(isinstance(v, str) for v in value):
        return [value[:-1]]
    if value is None:
        return {"block_channels": [[5, 3]], "extra_g_threshold": [0.5], "branch_channels": [2], "embedding_dim": [4],
                "branch_width": [4], "weight_clip": [0.01], "gradient_clip_norm": [0.01],
                "critic_warmup": ["{updates:10,first:1,every:500}"]}.get(name) or []
    return []


def leaves(node, prefix: str):
    """Dotted paths and values of the leaves of a config node (interpolations and targets skipped)."""
    if isinstance(node, DictConfig):
        for key in node:
            path = f"{prefix}.{key}"
            if str(key).startswith("_") or any(path == e or path.endswith("." + e) or path.startswith(e + ".")
                                               for e in EXEMPT):
                continue
            if OmegaConf.is_interpolation(node, key):
                continue
            child = node._get_node(key)
            if isinstance(child, (DictConfig, ListConfig)) and not (
                    isinstance(child, ListConfig) and all(not isinstance(c, (DictConfig, ListConfig)) for c in child)):
                yield from leaves(node[key], path)
            else:
                value = node[key]
                yield path, OmegaConf.to_container(value) if isinstance(value, ListConfig) else value


def with_value(cfg: DictConfig, override: str) -> DictConfig:
    """A copy of ``cfg`` with one ``key=value`` override applied as Hydra applies a command-line value
    (parsed by its grammar, merged with ``OmegaConf.update``): composing again for every value is slower."""
    (parsed,) = OverridesParser.create().parse_overrides([override])
    cfg = copy.deepcopy(cfg)
    OmegaConf.update(cfg, parsed.key_or_group, parsed.value(), merge=True)
    return cfg


def record(cfg: DictConfig) -> dict[str, object]:
    """What a tiny run of one epoch of two batches leaves: weights, optimiser state (the epoch-end
    scheduler step included), logs, grid layout."""
    cfg = copy.deepcopy(cfg)  # building fills in data keys
    L.seed_everything(0, verbose=False)
    dm = build_datamodule(cfg, setup=False)
    model = build_model(cfg)
    serve_draws(model, dm)
    callbacks = [instantiate_checked(cfg.callbacks[name], f"callbacks.{name}") for name in TRAINING_CALLBACKS
                 if cfg.callbacks.get(name) is not None]
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=2, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        log_every_n_steps=1, num_sanity_val_steps=0, callbacks=callbacks)
    trainer.fit(model, datamodule=dm)
    out: dict[str, object] = {f"state/{k}": v.detach().clone() for k, v in model.state_dict().items()}
    for i, opt in enumerate(trainer.optimizers):
        out[f"opt{i}/groups"] = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
        for j, st in enumerate(opt.state.values()):
            for k, v in st.items():
                out[f"opt{i}/{j}/{k}"] = v.clone() if torch.is_tensor(v) else v
    out.update({f"log/{k}": v.detach().clone() for k, v in trainer.callback_metrics.items()})
    out.update({f"log/{k}": torch.tensor(v) for k, v in model.logged.items()})
    out["grid"] = (model.num_samples, model.grid_nrow, model.grid_row_names)
    return out


def same(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if torch.is_tensor(x):
            if not (torch.is_tensor(y) and x.shape == y.shape and torch.equal(x, y)):
                return False
        elif x != y:
            return False
    return True


MODELS = ["dcgan", "wgan", "wgan_gp", "cdcgan", "cgan_mlp", "artgan", "pggan"]
GROUPS = {"loss": ["non_saturating", "minimax", "least_squares"], "optimizer": ["adam", "rmsprop", "sgd"],
          "scheduler": ["exponential", "piecewise"], "noise": ["normal", "uniform", "gamma", "interpolated"],
          "d_augment": ["diffaugment", "ada"]}
#: overrides an option needs for its keys to act within two batches
OPTION_BASE = {"ada": ["d_augment.interval=1", "d_augment.speed_images=64", "d_augment.p=0.5"]}
#: overrides a key needs to act at all: the key and the run it is compared with both get them (with
#: one critic update per batch, that update draws its own real images whatever fresh_reals says)
KEY_CONTEXT = {"fresh_reals": ["model.n_critic=2"]}


def walk(base: list[str], prefixes: tuple[str, ...]) -> list[str]:
    """The keys under ``prefixes`` that no candidate value makes count."""
    cfg = compose_config(base, "/nonexistent/run")
    reference = record(cfg)
    ignored = []
    for prefix in prefixes:
        for path, value in leaves(OmegaConf.select(cfg, prefix), prefix):
            honoured, refusals = False, []
            context = KEY_CONTEXT.get(path.rsplit(".", 1)[-1], [])
            compared_cfg = compose_config([*base, *context], "/nonexistent/run") if context else cfg
            compared = record(compared_cfg) if context else reference
            for new in candidates(path, value):
                text = "null" if new is None else (str(new).lower() if isinstance(new, bool) else str(new).replace(" ", ""))
                try:
                    honoured = not same(record(with_value(compared_cfg, f"{path}={text}")), compared)
                except UserError as exc:  # a refusal counts only when its sentence names this key
                    honoured = path.rsplit(".", 1)[-1] in str(exc)
                    refusals.append(str(exc))
                if honoured:
                    break
            if not honoured:
                ignored.append(f"{path}={value!r}" + (f" (refused for other reasons: {refusals})" if refusals else ""))
    return ignored


#: overrides a model needs for its keys to act within two batches (model=wgan's critic warm-up waits
#: 100 critic updates, 20 batches, for its first generator update: with 5, one batch's)
MODEL_BASE = {"wgan": ["model.critic_warmup.updates=5"]}


@pytest.mark.parametrize("model", MODELS)
def test_every_model_key_changes_the_run_or_is_refused(model):
    base = [*BASE, f"model={model}", *NARROW[model], *MODEL_BASE.get(model, [])]
    assert walk(base, ("model", "loss", "optimizer", "noise")) == []


def test_ema_callback_key_changes_the_run():
    base = [*BASE, "model=dcgan", *NARROW["dcgan"], "callbacks.ema.half_life_images=100"]
    assert walk(base, ("callbacks.ema",)) == []


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_every_group_option_key_changes_the_run_or_is_refused(group, option):
    assert (CONF / group / f"{option}.yaml").is_file()
    base = [*BASE, "model=dcgan", *NARROW["dcgan"], f"{group}={option}", *OPTION_BASE.get(option, [])]
    assert walk(base, (group,)) == []
