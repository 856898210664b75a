"""The augment group: per-sample kornia transforms on float batches in [-1, 1]."""
from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from gan_lab.build import check_types
from gan_lab.data import Augment, ImageFolder
from gan_lab.errors import UserError
from tests import datasets
from tests.conftest import compose_config, refused


def gradient_batch(n=8, size=16):
    """Identical images, a horizontal ramp from -1 to 1 in every channel."""
    ramp = torch.linspace(-1, 1, size).expand(size, size)
    return ramp.expand(n, 3, size, size).clone()


def test_none_is_the_identity_and_the_default():
    cfg = compose_config([])
    augment = instantiate(cfg.augment)
    x = gradient_batch()
    assert not augment.enabled and augment(x) is x
    assert isinstance(instantiate(cfg.data).augment, Augment)


def test_flip_with_probability_one_mirrors_every_image():
    x = gradient_batch()
    assert torch.allclose(Augment(hflip_p=1.0)(x), x.flip(-1), atol=1e-6)


def test_parameters_are_drawn_per_sample():
    torch.manual_seed(0)
    out = Augment(hflip_p=0.5)(gradient_batch(n=32))
    flipped = out[:, 0, 0, 0] > 0  # the ramp starts at +1 once mirrored
    assert 0 < flipped.sum() < 32
    rotated = Augment(rotation_p=1.0, degrees=30)(gradient_batch(n=8))
    assert len({tuple(img.flatten()[:40].round(decimals=3).tolist()) for img in rotated}) == 8


def test_rotation_never_paints_corners_mid_grey():
    black = torch.full((4, 3, 16, 16), -1.0)
    out = Augment(rotation_p=1.0, degrees=(40, 45))(black)  # border padding repeats the edge
    assert torch.allclose(out, black, atol=1e-5)
    white = torch.ones(4, 3, 16, 16)
    filled = Augment(rotation_p=1.0, degrees=(40, 45), rotation_padding="zeros")(white)
    corners = filled[:, :, 0, 0]
    assert torch.allclose(corners, torch.full_like(corners, -1.0), atol=1e-5)  # black, not 0


def test_pokemon_preset_keeps_shape_and_range_and_changes_images():
    cfg = compose_config(["augment=pokemon"])
    augment = instantiate(cfg.augment)
    assert augment.crop_p == 0.5 and augment.hflip_p == 0.5 and augment.rotation_p == 1.0
    assert augment.degrees == (-10.0, 10.0) and augment.crop_scale == (0.728, 0.728)
    torch.manual_seed(0)
    x = torch.rand(16, 3, 32, 32) * 2 - 1
    out = augment(x)
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1
    assert not torch.allclose(out, x)
    # served at another resolution (progressive growing), the same module works
    assert augment(torch.zeros(2, 3, 8, 8)).shape == (2, 3, 8, 8)


def test_custom_colour_jitter_on_grey_images():
    cfg = compose_config(["augment=custom", "augment.crop_p=0", "augment.hflip_p=0", "augment.rotation_p=0",
                          "augment.jitter_p=1", "augment.brightness=0.5"])
    augment = instantiate(cfg.augment)
    torch.manual_seed(0)
    grey = torch.zeros(8, 1, 8, 8)
    out = augment(grey)
    assert out.shape == grey.shape and out.std(dim=(1, 2, 3)).max() < 1e-5  # uniform shift per image
    assert out.mean(dim=(1, 2, 3)).unique().numel() > 1


@pytest.mark.parametrize("overrides,bad", [
    (["augment=custom", "augment.hflip_p=1.5"], "augment.hflip_p=1.5"), (["augment=custom", "augment.hue=0.7"], "augment.hue=0.7"),
    (["augment=custom", "augment.crop_scale=[0,1]"], r"augment.crop_scale=\[0,1\]")])
def test_bad_value_is_a_user_error(overrides, bad):
    with pytest.raises(UserError, match=rf"^{bad} must be "):
        check_types(compose_config(overrides).augment, "augment")


def test_crop_ranges_must_be_ordered():
    with refused("augment.crop_scale=[0.9, 0.5]", "[low, high]"):
        Augment(crop_scale=(0.9, 0.5))


def test_augmentation_runs_on_training_batches_only(tmp_path):
    dm = ImageFolder(root=datasets.make_image_folder(tmp_path / "pets"), image_size=8, batch_size=2,
                     augment=Augment(hflip_p=1.0))
    dm.setup("fit")
    images = torch.arange(8, dtype=torch.uint8).repeat(6, 3, 8, 1) * 30
    out, _ = dm.on_after_batch_transfer((images, torch.zeros(6, dtype=torch.long)), 0)
    assert torch.equal(out, images.float() / 127.5 - 1)  # no trainer, not training: untouched

    class Training:
        training = True

    dm.trainer = Training()
    out, _ = dm.on_after_batch_transfer((images, torch.zeros(6, dtype=torch.long)), 0)
    assert torch.allclose(out, (images.float() / 127.5 - 1).flip(-1), atol=1e-6)
