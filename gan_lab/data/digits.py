"""scikit-learn's bundled digits (UCI, CC BY 4.0): 1,797 grey 8x8 images, 10 classes, in ``assets/digits.csv.gz``;
upscaled to ``image_size`` (bilinear), with a fixed validation split.
"""
from __future__ import annotations

import gzip
from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F

from gan_lab.constraints import Count
from gan_lab.data.base import ImageDataModule, ValFraction
from gan_lab.pixels import to_uint8


class Digits(ImageDataModule):
    """Bundled handwritten digits; 1 channel, 10 classes; ``val_fraction`` held out, independent of the seed."""

    channels = 1
    num_classes = 10
    class_names = [str(i) for i in range(10)]

    def __init__(self, image_size: Count = 32, val_fraction: ValFraction = 0.1, **kwargs) -> None:
        super().__init__(image_size=image_size, **kwargs)
        self.val_fraction = float(val_fraction)

    def load_split(self, split):
        with resources.files("gan_lab.data").joinpath("assets", "digits.csv.gz").open("rb") as fh:
            table = np.loadtxt(gzip.open(fh), delimiter=",", dtype=np.float32)  # rows: 64 pixels in 0..16, the label
        perm = torch.randperm(len(table), generator=torch.Generator().manual_seed(1797))
        n_val = int(round(len(table) * self.val_fraction))
        idx = perm[:n_val] if split == "val" else perm[n_val:]
        x = torch.from_numpy(table[:, :64].reshape(-1, 1, 8, 8))[idx] / 16.0 * 2 - 1  # [-1, 1]
        if self.image_size != 8:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False)
        return to_uint8(x.clamp(-1, 1)), torch.from_numpy(table[:, 64].astype(np.int64))[idx]
