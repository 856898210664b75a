"""MNIST from its four IDX files (plain or gzip), as published by LeCun et al. and mirrored by
torchvision: 60,000 training and 10,000 test images of 28x28 grey digits, 10 classes.

The test set (``t10k-*``) is served as the ``val`` split. Images are resized (bilinear, antialiased)
to ``image_size`` once and cached.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gan_lab.data.base import to_float, to_uint8
from gan_lab.data.cache import Split
from gan_lab.data.disk import DiskImageDataModule
from gan_lab.errors import UserError

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
PREFIX = {"train": "train", "val": "t10k"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (``.gz`` or plain): 2 zero bytes, a type code, the number of dimensions, the
    big-endian int32 sizes, then the data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise UserError(f"{path} is not an IDX file (bad magic number); re-download it from "
                        f"http://yann.lecun.com/exdb/mnist/ or a torchvision mirror.")
    ndim = data[3]
    shape = tuple(int(v) for v in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[data[2]])
    count = int(np.prod(shape))
    if len(data) - 4 - 4 * ndim < count * dtype.itemsize:
        raise UserError(f"{path} is truncated ({len(data)} bytes for shape {shape}); re-download it.")
    return np.frombuffer(data, dtype=dtype, count=count, offset=4 + 4 * ndim).reshape(shape)


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [N, C, H, W] -> uint8 [N, C, size, size] (bilinear, antialiased), in chunks."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images.contiguous()
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8)
    for i in range(0, images.shape[0], 4096):
        x = to_float(images[i:i + 4096])
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[i:i + 4096] = to_uint8(x.clamp_(-1, 1))
    return out


class MNIST(DiskImageDataModule):
    """MNIST digits; 1 channel, 10 classes. ``root`` holds the IDX files (also found under
    ``root/MNIST/raw/`` or ``root/raw/``, torchvision's layout)."""

    channels = 1
    num_classes = 10
    class_names = [str(i) for i in range(10)]
    published = "published at http://yann.lecun.com/exdb/mnist/ and on the torchvision mirrors"
    layout = ("train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
              "t10k-labels-idx1-ubyte (plain or .gz)")

    def __init__(self, root: str, image_size: int = 32, **kwargs) -> None:
        super().__init__(root=root, image_size=image_size, **kwargs)

    @property
    def name(self) -> str:
        return "mnist"

    def find(self, stem: str) -> Path:
        for folder in (self.root, self.root / "MNIST" / "raw", self.root / "raw"):
            for name in (stem, stem + ".gz"):
                if (folder / name).is_file():
                    return folder / name
        raise self.missing(self.root / stem, f"the IDX file {stem}")

    def files(self, split: str) -> tuple[Path, Path]:
        prefix = PREFIX[split]
        return self.find(f"{prefix}-images-idx3-ubyte"), self.find(f"{prefix}-labels-idx1-ubyte")

    def source_files(self, split):
        return list(self.files(split))

    def build_split(self, split):
        image_file, label_file = self.files(split)
        images, labels = read_idx(image_file), read_idx(label_file)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UserError(f"{image_file} ({images.shape}) and {label_file} ({labels.shape}) do not "
                            f"match; expected [N, 28, 28] images and [N] labels.")
        x = resize_uint8(torch.from_numpy(images.astype(np.uint8)).unsqueeze(1), self.image_size)
        n, h, w = images.shape
        return Split(images=x, labels=torch.from_numpy(labels.astype(np.int64)),
                     files=[f"{image_file.name}[{i}]" for i in range(n)],
                     source_sizes=torch.tensor([[w, h]], dtype=torch.long).expand(n, 2).clone())
