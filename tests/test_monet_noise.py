"""The Monet noise study's batch (report 003, Algorithms 2 and 3) against an independent reference:
plain copies of the nets and optimisers, the report's steps written out with torch.nn.functional."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from gan_lab.build import build_datamodule, build_model
from tests.datasets import make_monet


def test_a_monet_noise_batch_is_algorithm_2_then_algorithm_3(make_cfg, tmp_path):
    root = make_monet(tmp_path / "monet")
    cfg = make_cfg("experiment=monet_noise", "noise=uniform", f"data.root={root}", "model.generator.width=4",
                   "model.discriminator.width=4", tiny=False)
    build_datamodule(cfg, setup=False)
    model = build_model(cfg)
    assert model.fresh_fakes is True
    generator, discriminator = copy.deepcopy(model.generator), copy.deepcopy(model.discriminator)
    d_optim = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    g_optim = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d, opt_g = model.configure_optimizers()[0]
    real_images = torch.rand(4, 3, 64, 64) * 2 - 1
    size = real_images.shape[0]

    def real_loss(out):  # BCE against 0.8 (the report's real_loss)
        return F.binary_cross_entropy(torch.sigmoid(out), torch.full_like(out, 0.8))

    def fake_loss(out):  # BCE against 0.1 (fake_loss)
        return F.binary_cross_entropy(torch.sigmoid(out), torch.full_like(out, 0.1))

    def noise(n):  # U(-1, 1), 100 values
        return torch.rand(n, 100) * 2 - 1

    torch.manual_seed(3)
    terms = model.updates(real_images, torch.zeros(size, dtype=torch.long), opt_d, opt_g, lambda loss: loss.backward())

    torch.manual_seed(3)
    # Algorithm 2: the discriminator
    d_optim.zero_grad()
    d_real = discriminator(real_images)
    d_real_loss = real_loss(d_real)
    z = noise(size)
    fake_images = generator(z)
    d_fake = discriminator(fake_images.detach())
    d_fake_loss = fake_loss(d_fake)
    d_loss = d_real_loss + d_fake_loss
    d_loss.backward()
    d_optim.step()
    # Algorithm 3: the generator, from its own noise
    g_optim.zero_grad()
    z = noise(size)
    fake_images = generator(z)
    d_fake = discriminator(fake_images)
    g_loss = real_loss(d_fake)
    g_loss.backward()
    g_optim.step()

    assert torch.allclose(terms["d_loss"], d_loss, atol=1e-5) and torch.allclose(terms["g_loss"], g_loss, atol=1e-5)
    for mine, theirs in ((model.generator, generator), (model.discriminator, discriminator)):
        for (name, a), b in zip(mine.state_dict().items(), theirs.state_dict().values()):
            assert torch.allclose(a.float(), b.float(), atol=1e-6), name
