"""The EMA callback (``callbacks.ema``): the update rule checked against plain tensors, any model
samples from it, it survives checkpoints (exact resume included) and comes back with ``load_run``,
so ``generate`` and ``evaluate`` use it; half-life 0 is a copy; off by default."""
from __future__ import annotations

import signal

import lightning as L
import pytest
import torch
from PIL import Image

from gan_lab.build import build_datamodule, build_model, instantiate_checked
from gan_lab.callbacks.ema import EMA
from gan_lab.errors import UserError
from gan_lab.generate import generate
from gan_lab.metrics.sampling import ema_weights
from gan_lab.models.checkpoint_state import check_nets
from gan_lab.run import TrainingInterrupted, train
from gan_lab.runs import load_run
from tests.conftest import CONF, NARROW_NETS, refused
from tests.test_evaluate import compose_entry, write_run_config
from tests.test_resume import assert_same, overrides, weights

#: dcgan at 16x16, batches of 8 images
TINY_DCGAN = ["model=dcgan", *NARROW_NETS["dcgan"], "data.image_size=16", "data.batch_size=8"]


def snapshot(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


class EMASpy(L.Callback):
    """Listed before the EMA callback: the EMA before each batch; listed after it: the EMA and the live
    generator after each batch (plain tensors)."""

    def __init__(self):
        self.before: list[dict] = []
        self.after: list[tuple[dict, dict, int]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.before.append(snapshot(pl_module.generator_ema))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after.append((snapshot(pl_module.generator_ema), snapshot(pl_module.generator), batch[0].shape[0]))


def fit(cfg, callbacks: list[L.Callback], batches: int = 3):
    L.seed_everything(0, verbose=False)
    dm = build_datamodule(cfg)
    model = build_model(cfg)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=batches, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=callbacks, log_every_n_steps=1)
    trainer.fit(model, datamodule=dm)
    return model


@pytest.mark.parametrize("half_life", [100.0, 0.0])
def test_one_batch_moves_the_ema_by_the_half_life_rule(make_cfg, half_life):
    """After a batch of n images: ema = beta * ema_before + (1 - beta) * live_after, beta = 0.5 ** (n / h)
    (h = 0: a copy); buffers (BatchNorm statistics) are the live generator's."""
    spy_before, spy_after = EMASpy(), EMASpy()
    model = fit(make_cfg(*TINY_DCGAN), [spy_before, EMA(half_life), spy_after])
    assert len(spy_before.before) == len(spy_after.after) == 3
    params = {name for name, _ in model.generator.named_parameters()}
    buffers = {name for name, _ in model.generator.named_buffers()}
    assert buffers  # DCGAN's G has BatchNorm running statistics
    for old, (new, live, n) in zip(spy_before.before, spy_after.after):
        assert n == 8
        beta = 0.5 ** (n / half_life) if half_life > 0 else 0.0
        for name in params:
            expected = beta * old[name] + (1 - beta) * live[name]
            assert torch.allclose(new[name], expected, atol=1e-6, rtol=1e-5), name
        for name in buffers:
            assert torch.equal(new[name], live[name]), name
    # the EMA did move toward G and (with h > 0) lags behind it
    first_old, (first_new, first_live, _) = spy_before.before[0], spy_after.after[0]
    moved = sum((first_new[k] - first_old[k]).abs().sum() for k in params)
    lag = sum((first_new[k] - first_live[k]).abs().sum() for k in params)
    assert moved > 0 and ((lag > 0) if half_life > 0 else (lag == 0))


def test_ema_is_off_by_default_and_refuses_bad_values(make_cfg):
    cfg = make_cfg(*TINY_DCGAN)
    assert cfg.callbacks.ema.half_life_images is None
    model = fit(cfg, [instantiate_checked(cfg.callbacks.ema, "callbacks.ema")], batches=1)
    assert model.generator_ema is None and not any(k.startswith("generator_ema.") for k in model.state_dict())
    with pytest.raises(UserError, match=r"^callbacks\.ema\.half_life_images=-1 must be "):
        instantiate_checked(make_cfg(*TINY_DCGAN, "callbacks.ema.half_life_images=-1").callbacks.ema, "callbacks.ema")
    with refused("callbacks.ema", "LightningModule", "callbacks.ema.half_life_images=null"):
        EMA(10).setup(None, L.LightningModule(), "fit")


def test_ema_of_a_compiled_generator_runs_its_own_weights(make_cfg):
    """callbacks.fast_path.compile compiles G in place; a copy would share the compiled call of the live
    G (and so run the live weights): the EMA copy runs eagerly, on its own weights."""
    cfg = make_cfg(*TINY_DCGAN)
    build_datamodule(cfg, setup=False)
    model = build_model(cfg)
    model.generator.compile()  # lazy: nothing is compiled until the first call
    ema = model.attach_generator_ema()
    with torch.no_grad():
        for p in ema.parameters():
            p.zero_()
    assert model.sample(n=2).abs().max() == 0  # tanh(0): the zeroed EMA drew them, not the live G


@pytest.mark.parametrize("model_name", ["wgan_gp", "artgan"])
def test_ema_works_for_other_models(make_cfg, model_name):
    spy = EMASpy()
    extra = ["model.n_critic=1"] if model_name == "wgan_gp" else []
    cfg = make_cfg(f"model={model_name}", *NARROW_NETS[model_name], "data.image_size=16", "data.batch_size=8", *extra)
    model = fit(cfg, [EMA(100), spy], batches=2)
    ema, live, _ = spy.after[-1]
    assert ema.keys() == live.keys() and any(not torch.equal(ema[k], live[k]) for k in ema)
    assert not torch.equal(model.sample_fixed(), ema_sample(model, live=True))


def ema_sample(model, live: bool = False) -> torch.Tensor:
    with ema_weights(model, enabled=not live):
        return model.sample_fixed()


def test_dcgan_samples_from_its_ema_and_load_run_and_generate_use_it(make_cfg, tmp_path):
    run = tmp_path / "run"
    cfg = make_cfg(*TINY_DCGAN, "callbacks.ema.half_life_images=50", "trainer.max_epochs=2")
    write_run_config(cfg, run)
    train(cfg)
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    ema_state = {k[len("generator_ema."):]: v for k, v in state["state_dict"].items() if k.startswith("generator_ema.")}
    live_state = {k[len("generator."):]: v for k, v in state["state_dict"].items() if k.startswith("generator.")}
    assert ema_state.keys() == live_state.keys()
    assert any(not torch.equal(ema_state[k], live_state[k]) for k in ema_state)  # the EMA lags behind G

    loaded = load_run(run, device="cpu").model  # no callback: the checkpoint's EMA is attached
    assert loaded.generator_ema is not None
    assert all(torch.equal(v, loaded.generator_ema.state_dict()[k]) for k, v in ema_state.items())
    ema_images = loaded.sample_fixed()
    assert torch.allclose(ema_images, loaded.to_data_range(loaded.generator_ema.eval()(loaded.fixed_noise)).clamp(-1, 1))
    assert not torch.allclose(ema_images, ema_sample(loaded, live=True))  # EMA samples differ from the live G's
    assert torch.equal(loaded.sample_fixed(), ema_images)  # and the EMA is back after ema=false

    written = {}
    for ema in ("true", "false"):
        out = tmp_path / f"generated_{ema}"
        written[ema] = generate(compose_entry("generate", f"run_dir={run}", f"out_dir={out}", f"ema={ema}",
                                              "num_samples=4", "device=cpu", "interpolation.seeds=[]"))
    ema_png, live_png = (Image.open(written[e]["samples"]) for e in ("true", "false"))
    assert ema_png.size == live_png.size and ema_png.tobytes() != live_png.tobytes()


def test_ema_resumes_exactly_from_a_mid_epoch_checkpoint(make_cfg, tmp_path):
    """8 batches in one go == 6 (SIGTERM mid-epoch) + resume, EMA weights included: the EMA is updated
    before the interruption's checkpoint is written and restored before training resumes."""
    base = overrides("dcgan", "trainer.max_epochs=2", "callbacks.ema.half_life_images=40")
    full = tmp_path / "full"
    train(make_cfg(*base, run_dir=full))
    expected, _ = weights(full)
    assert any(k.startswith("generator_ema.") for k in expected)
    cut = tmp_path / "cut"
    kill = ["+callbacks.kill._target_=tests.test_resume.SignalAt", "+callbacks.kill.batch=5",
            f"+callbacks.kill.signum={int(signal.SIGTERM)}"]
    with pytest.raises(TrainingInterrupted):
        train(make_cfg(*base, *kill, run_dir=cut))
    resumed = tmp_path / "resumed"
    train(make_cfg(*base, f"ckpt_path={cut / 'checkpoints' / 'last.ckpt'}", run_dir=resumed))
    got, _ = weights(resumed)
    assert_same(expected, got)


def test_checkpoints_with_and_without_ema_load_either_way(make_cfg, tmp_path):
    """A run without EMA resumed with it: the EMA starts from the checkpoint's generator. A checkpoint
    with EMA resumed without the callback: the EMA is left out (nothing would update it)."""
    plain = tmp_path / "plain"
    train(make_cfg(*TINY_DCGAN, "trainer.max_epochs=1", run_dir=plain))
    state, _ = weights(plain)
    assert not any(k.startswith("generator_ema.") for k in state)
    on = tmp_path / "on"  # a half-life of 1e9 images: the EMA stays where it started
    train(make_cfg(*TINY_DCGAN, "trainer.max_epochs=2", "callbacks.ema.half_life_images=1e9",
                   f"ckpt_path={plain / 'checkpoints' / 'last.ckpt'}", run_dir=on))
    got, _ = weights(on)
    started = {k: v for k, v in state.items() if k.startswith("generator.") and v.is_floating_point()}
    assert all(torch.allclose(got["generator_ema." + k[len("generator."):]], v, atol=1e-6)
               for k, v in started.items() if "running" not in k)
    assert any(not torch.allclose(got[k], v) for k, v in started.items())  # G itself trained on
    off = tmp_path / "off"
    train(make_cfg(*TINY_DCGAN, "trainer.max_epochs=3", f"ckpt_path={on / 'checkpoints' / 'last.ckpt'}", run_dir=off))
    got_off, _ = weights(off)
    assert not any(k.startswith("generator_ema.") for k in got_off)
    # the nets must still match: another width is refused in one sentence, EMA or not
    for with_ema in (False, True):
        cfg = make_cfg("model=dcgan", "model.generator.width=8", "model.discriminator.width=4", "data.image_size=16")
        build_datamodule(cfg, setup=False)
        model = build_model(cfg)
        if with_ema:
            model.attach_generator_ema()
        with refused("(generator", ".hydra/overrides.yaml"):
            check_nets(model, got)


def test_default_callbacks_list_ema_before_the_callbacks_that_save_or_read_weights():
    """Lightning runs callbacks in list order: the EMA must be updated before an interruption's
    checkpoint (graceful_stop, limit_checkpoint) or the divergence guard reads the weights after a batch."""
    text = (CONF / "callbacks" / "default.yaml").read_text()
    keys = [line.split(":")[0] for line in text.splitlines() if line and not line[0].isspace() and ":" in line
            and not line.startswith("#")]
    assert keys.index("ema") < min(keys.index(k) for k in ("sample_grid", "divergence") if k in keys)
