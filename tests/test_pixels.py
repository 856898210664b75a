"""Pixel conversions and grids: round trips, the rounding convention, and grids that show the
pixels a saved sample holds."""
from __future__ import annotations

import numpy as np
import torch

from gan_lab.grids import PADDING, grid_image
from gan_lab.pixels import to_float, to_uint8, to_unit

LEVELS = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
STEP = 2.0 / 255.0  # one uint8 level in [-1, 1]


def test_uint8_to_float_and_back_is_the_identity_on_every_level():
    x = to_float(LEVELS)
    assert x.dtype == torch.float32 and x.min() == -1.0 and x.max() == 1.0
    assert torch.allclose(x.flatten(), torch.linspace(-1, 1, 256), atol=1e-6)  # evenly spaced levels
    assert torch.equal(to_uint8(x), LEVELS)


def test_float_to_uint8_rounds_to_the_nearest_level_and_clamps():
    x = to_float(LEVELS)
    inside = torch.full_like(x, 0.45 * STEP)  # less than half a level away: the same level
    assert torch.equal(to_uint8(x + inside), LEVELS) and torch.equal(to_uint8(x - inside), LEVELS)
    up = to_uint8((x + 0.55 * STEP).clamp(max=1.0))  # more than half a level: the next one
    assert torch.equal(up.flatten()[:-1].long(), LEVELS.flatten()[1:].long())
    assert to_uint8(torch.tensor([-7.0, -1.0001, 1.0001, 3.0])).tolist() == [0, 0, 255, 255]


def test_conversions_accept_either_kind_and_low_precision():
    assert to_uint8(LEVELS) is LEVELS  # already uint8: nothing to round
    half = to_float(LEVELS).to(torch.bfloat16)
    assert to_float(half).dtype == torch.float32 and torch.equal(to_float(half), half.float())
    assert torch.equal(to_uint8(half), to_uint8(half.float()))  # computed in float32, not in bf16


def test_unit_space_is_the_same_from_uint8_and_from_float():
    unit = to_unit(LEVELS)
    assert unit.min() == 0.0 and unit.max() == 1.0
    assert torch.allclose(unit, LEVELS.float() / 255.0, atol=0)
    assert torch.allclose(to_unit(to_float(LEVELS)), unit, atol=1e-6)
    assert to_unit(LEVELS, torch.float64).dtype == torch.float64


def test_grid_cells_hold_the_saved_pixels_and_padding_is_black():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 5, 5, generator=g) * 2.2 - 1.1  # a little out of range, as raw G output can be
    array = np.array(grid_image(images, nrow=2))
    cell = 5 + PADDING
    assert array.shape == (2 * cell + PADDING, 2 * cell + PADDING, 3)
    for i in range(4):
        r, c = divmod(i, 2)
        top, left = PADDING + r * cell, PADDING + c * cell
        shown = torch.from_numpy(array[top:top + 5, left:left + 5]).permute(2, 0, 1)
        assert torch.equal(shown, to_uint8(images[i]))
    assert (array[:PADDING] == 0).all() and (array[:, :PADDING] == 0).all()


def test_grid_upscales_small_images_by_repeating_pixels_and_labels_rows():
    digit = torch.tensor([[0, 255], [255, 0]], dtype=torch.uint8).view(1, 1, 2, 2)
    array = np.array(grid_image(digit, nrow=1, upscale_to=8))
    assert array.shape == (8, 8, 3)  # one image: no padding
    assert (array[:4, :4] == 0).all() and (array[:4, 4:] == 255).all() and (array[4:, :4] == 255).all()
    named = grid_image(digit.repeat(2, 1, 1, 1), nrow=1, row_names=["cat", "dog"])
    plain = grid_image(digit.repeat(2, 1, 1, 1), nrow=1)
    assert named.height == plain.height and named.width > plain.width  # a margin for the names
    assert np.array_equal(np.array(named)[:, -plain.width:], np.array(plain))
