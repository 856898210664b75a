"""model.gradient_clip_norm: one update's gradients scaled to the norm by hand, every optimizer step of
a real run within it, the refusals, and the automatic-optimisation key pointing to it."""
from __future__ import annotations

import pytest
import torch

from torch.optim.optimizer import register_optimizer_step_pre_hook

from gan_lab.build import build_datamodule, build_model
from gan_lab.errors import UserError
from gan_lab.run import train
from tests.conftest import NARROW_NETS

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
        handle = register_optimizer_step_pre_hook(record)
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


def test_bad_values_and_16_mixed_are_refused(make_cfg):
    for value in ("0", "-1"):
        with pytest.raises(UserError, match=rf"model.gradient_clip_norm={value} must be > 0"):
            built(make_cfg, f"model.gradient_clip_norm={value}")
    model = built(make_cfg, "model.gradient_clip_norm=1")
    assert model.gradient_clip_refusal("16-mixed").startswith("model.gradient_clip_norm=1 cannot clip under "
                                                              "trainer.precision=16-mixed")
    assert model.gradient_clip_refusal("bf16-mixed") is None and model.gradient_clip_refusal("32-true") is None
    assert built(make_cfg).gradient_clip_refusal("16-mixed") is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_16_mixed_refuses_clipping_before_training(make_cfg):
    cfg = make_cfg(*NARROW, "model.gradient_clip_norm=1", "trainer.accelerator=gpu", "trainer.precision=16-mixed",
                   "trainer.max_epochs=1")
    with pytest.raises(UserError, match="cannot clip under trainer.precision=16-mixed"):
        train(cfg)
