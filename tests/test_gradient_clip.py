"""model.gradient_clip_norm: one update's gradients scaled to the norm by hand, every optimizer step of
a real run within it (also under 16-mixed's gradient scaler: clipped once unscaled), the refusals, and
the automatic-optimisation key pointing to it. The gradients a step used are read after it (a
post-step hook): Lightning clips them inside the step call, between unscaling and stepping."""
from __future__ import annotations

import pytest
import torch

from torch.optim.optimizer import register_optimizer_step_post_hook

from gan_lab.build import build_datamodule, build_model
from gan_lab.errors import UserError
from gan_lab.run import train
from tests.conftest import NARROW_NETS, refused

NARROW = ["model.generator.width=8", "model.discriminator.width=8", "data.image_size=16"]


def built(make_cfg, *overrides):
    cfg = make_cfg(*NARROW, *overrides)
    build_datamodule(cfg)
    torch.manual_seed(0)
    return build_model(cfg)


def test_a_discriminator_update_steps_with_gradients_scaled_to_the_norm(make_cfg):
    clipped, plain = built(make_cfg, "model.gradient_clip_norm=0.05"), built(make_cfg)
    real, fake = torch.rand(8, 1, 16, 16) * 2 - 1, torch.rand(8, 1, 16, 16) * 2 - 1
    labels = torch.zeros(8, dtype=torch.long)
    before = [p.detach().clone() for p in plain.discriminator.parameters()]
    for model in (clipped, plain):
        opt = torch.optim.SGD(model.discriminator.parameters(), lr=1.0)  # a step moves each weight by its gradient
        model.discriminator_update(opt, real, labels, fake, labels, torch.Tensor.backward)
    grads = [p.grad for p in plain.discriminator.parameters()]
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
    assert norm > 0.05  # the clip acts
    scale = 0.05 / (norm + 1e-6)
    for p0, p, g in zip(before, clipped.discriminator.parameters(), grads):
        torch.testing.assert_close(p.detach(), p0 - (scale * g.double()).float(), rtol=1e-5, atol=1e-7)
    clipped_norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in clipped.discriminator.parameters()))
    assert clipped_norm == pytest.approx(0.05, rel=1e-4)
    # the generator's parameters were not touched by the discriminator update
    assert all(p.grad is None for p in clipped.generator.parameters())


@pytest.mark.parametrize("model", ["dcgan", "artgan"])
def test_every_optimizer_step_of_a_run_is_within_the_norm(make_cfg, tmp_path, model):
    norms: list[float] = []

    def record(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norms.append(float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads))))

    nets = ["model=artgan", "data.image_size=16", *NARROW_NETS["artgan"]] if model == "artgan" else NARROW
    results = {}
    for clip in ("0.05", "null"):
        handle = register_optimizer_step_post_hook(record)
        try:
            norms.clear()
            train(make_cfg(*nets, f"model.gradient_clip_norm={clip}", "trainer.max_epochs=1",
                           "trainer.limit_train_batches=3", run_dir=tmp_path / clip))
        finally:
            handle.remove()
        results[clip] = list(norms)
    assert len(results["0.05"]) == len(results["null"]) == 6   # one D and one G step per batch
    assert max(results["0.05"]) <= 0.05 * (1 + 1e-5)
    assert max(results["null"]) > 0.05


def test_bad_values_and_16_mixed_with_a_fused_optimizer_are_refused(make_cfg):
    for value in ("0", "-1"):
        with pytest.raises(UserError, match=rf"^model\.gradient_clip_norm={value} must be "):
            built(make_cfg, f"model.gradient_clip_norm={value}")
    model = built(make_cfg, "model.gradient_clip_norm=1")
    plain = [torch.optim.Adam([torch.zeros(1, requires_grad=True)]) for _ in range(2)]
    fused = [plain[0], torch.optim.Adam([torch.zeros(1, requires_grad=True)], fused=True)]
    assert model.precision_refusal("16-mixed", plain) is None  # unscaled by Lightning before the hook
    refusal = model.precision_refusal("16-mixed", fused)
    assert refusal is not None and all(s in refusal for s in (
        "model.gradient_clip_norm=1", "trainer.precision=16-mixed", "generator", "Adam",
        "optimizer.generator.fused=false", "trainer.precision=bf16-mixed")), refusal
    assert model.precision_refusal("bf16-mixed", fused) is None and model.precision_refusal("32-true", fused) is None
    assert built(make_cfg).precision_refusal("16-mixed", fused) is None


def test_16_mixed_clips_the_unscaled_gradients(make_cfg, tmp_path):
    """Under 16-mixed's gradient scaler (float16 autocast on the CPU, with a scaler as on a GPU), every
    step's gradients have the clip norm itself: clipped after the unscaling, not while still scaled
    (which would leave them 2^10 times smaller) nor left unclipped."""
    import lightning as L

    from gan_lab.precision import PhaseMixedPrecision

    norms: list[float] = []

    def record(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norms.append(float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads))))

    cfg = make_cfg(*NARROW, "model.gradient_clip_norm=0.05")
    dm = build_datamodule(cfg)
    torch.manual_seed(0)
    model = build_model(cfg)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=3, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        plugins=[PhaseMixedPrecision("16-mixed", "cpu", scaler=scaler)])
    handle = register_optimizer_step_post_hook(record)
    try:
        trainer.fit(model, datamodule=dm)
    finally:
        handle.remove()
    assert trainer.precision_plugin.scaler is scaler and scaler.get_scale() >= 2.0 ** 9  # it scaled the losses
    assert len(norms) == 6 and all(n == pytest.approx(0.05, rel=1e-3) for n in norms), norms

    # a fused optimizer unscales inside its step, after the hook: refused before the first batch
    cfg = make_cfg(*NARROW, "model.gradient_clip_norm=0.05", "optimizer.discriminator.fused=true")
    dm = build_datamodule(cfg)
    model = build_model(cfg)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=3, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        plugins=[PhaseMixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))])
    with refused("model.gradient_clip_norm=0.05", "trainer.precision=16-mixed", "optimizer.discriminator.fused=false"):
        trainer.fit(model, datamodule=dm)
    assert model.batches_seen == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_16_mixed_on_a_gpu_clips_the_unscaled_gradients(make_cfg, tmp_path):
    norms: list[float] = []

    def record(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norms.append(float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads))))

    cfg = make_cfg(*NARROW, "model.gradient_clip_norm=0.05", "trainer.accelerator=gpu", "trainer.precision=16-mixed",
                   "trainer.max_epochs=1", "trainer.limit_train_batches=4")
    handle = register_optimizer_step_post_hook(record)
    try:
        train(cfg)
    finally:
        handle.remove()
    # steps the scaler skipped (an overflow at the first scales) make no step and record nothing
    assert norms and all(n == pytest.approx(0.05, rel=1e-3) for n in norms), norms
