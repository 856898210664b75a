"""PNG image grids, showing the pixels a saved sample holds (:func:`gan_lab.pixels.to_uint8`)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from torchvision.utils import make_grid

from gan_lab.pixels import to_uint8

#: pixels between the images of a grid (black)
PADDING = 2


def grid_image(images: Tensor, nrow: int, row_names: Sequence[str] | None = None,
               upscale_to: int = 0) -> Image.Image:
    """An RGB picture of ``images`` (uint8, or float in [-1, 1]), ``nrow`` per row, rows labelled on the left
    with ``row_names``; ``upscale_to`` enlarges smaller images (nearest neighbour) to that side in pixels."""
    pixels = to_uint8(images.detach().cpu())
    if upscale_to and pixels.shape[-1] < upscale_to:
        pixels = torch.nn.functional.interpolate(pixels, size=upscale_to, mode="nearest")
    grid = make_grid(pixels, nrow=nrow, padding=PADDING)
    img = Image.fromarray(grid.permute(1, 2, 0).numpy()).convert("RGB")
    if not row_names:
        return img
    font = ImageFont.load_default()
    margin = max(int(ImageDraw.Draw(img).textlength(str(n), font=font)) for n in row_names) + 8
    out = Image.new("RGB", (img.width + margin, img.height), "white")
    out.paste(img, (margin, 0))
    draw = ImageDraw.Draw(out)
    cell = pixels.shape[-2] + PADDING
    for r, name in enumerate(row_names):
        draw.text((4, 2 + r * cell + cell // 2 - 6), str(name), fill="black", font=font)
    return out


def save_grid(images: Tensor, path: str | Path, nrow: int, row_names: Sequence[str] | None = None,
              upscale_to: int = 0) -> Path:
    """:func:`grid_image` written to ``path`` (folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid_image(images, nrow, row_names, upscale_to).save(path)
    return path
