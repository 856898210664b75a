"""MNIST (LeCun et al.) from its four IDX files, official or Kaggle names, plain or ``.gz``: 28x28 grey, 10 classes.

The test set (``t10k-*``) is served as ``val``; images are resized once and cached.
"""
from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gan_lab.constraints import Count
from gan_lab.data.cache import Split
from gan_lab.data.disk import DiskImageDataModule
from gan_lab.errors import UserError
from gan_lab.pixels import to_float, to_uint8

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
PREFIX = {"train": "train", "val": "t10k"}
#: the names of one file, in the order they are looked for: official (and torchvision's), then Kaggle's
NAMES = {"images": ("{prefix}-images-idx3-ubyte", "{prefix}-images.idx3-ubyte"),
         "labels": ("{prefix}-labels-idx1-ubyte", "{prefix}-labels.idx1-ubyte")}


REDOWNLOAD = "re-download it from http://yann.lecun.com/exdb/mnist/ or a torchvision mirror"


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (``.gz`` or plain) as an array; refuses a bad header or a data size that differs from it."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (EOFError, OSError, zlib.error) as exc:  # a truncated or damaged .gz
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise UserError(f"{path} cannot be read ({type(exc).__name__}: {reason}); {REDOWNLOAD}.") from None
    if not data:
        raise UserError(f"{path} is empty (0 bytes); {REDOWNLOAD}.")
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise UserError(f"{path} is not an IDX file (bad magic number); {REDOWNLOAD}.")
    ndim, header = data[3], 4 + 4 * data[3]
    if len(data) < header:
        raise UserError(f"{path} is truncated inside its header: {len(data)} bytes where {ndim} sizes need "
                        f"{header}; {REDOWNLOAD}.")
    shape = tuple(int(v) for v in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[data[2]])
    if any(v < 0 for v in shape):
        raise UserError(f"{path} has the negative sizes {shape} in its header; {REDOWNLOAD}.")
    size = math.prod(shape) * dtype.itemsize
    if len(data) - header != size:
        what = "is truncated" if len(data) - header < size else "is longer than its header says"
        raise UserError(f"{path} {what}: {len(data) - header} bytes of data where its header (shape {shape}, "
                        f"{dtype.name}) announces {size}; {REDOWNLOAD}.")
    return np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=header).reshape(shape)


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
    """MNIST digits; 1 channel, 10 classes; IDX files in ``root``, ``root/MNIST/raw/`` or ``root/raw/``."""

    channels = 1
    num_classes = 10
    class_names = [str(i) for i in range(10)]
    published = ("published at http://yann.lecun.com/exdb/mnist/, on the torchvision mirrors, whose "
                 "download writes them to <root>/MNIST/raw/, and on Kaggle as hojjatk/mnist-dataset")
    layout = ("train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
              "t10k-labels-idx1-ubyte (or Kaggle's train-images.idx3-ubyte and so on; plain or .gz), "
              "directly or in MNIST/raw/ or raw/")

    def __init__(self, root: str, image_size: Count = 32, **kwargs) -> None:
        super().__init__(root=root, image_size=image_size, **kwargs)

    def check(self) -> None:
        # all four files up front, also for an absent root
        for split in PREFIX:
            self.source_files(split)

    def find(self, split: str, kind: str) -> Path:
        """The first existing file among the names of ``kind`` (images, labels) of ``split``, plain or ``.gz``,
        in the root, then torchvision's folders."""
        names = [n.format(prefix=PREFIX[split]) for n in NAMES[kind]]
        folders = [self.root, self.root / "MNIST" / "raw", self.root / "raw"]
        for candidate in (folder / f"{name}{gz}" for folder in folders for name in names for gz in ("", ".gz")):
            if candidate.is_file():
                return candidate
        places = ", ".join(str(f.absolute()) for f in folders)
        raise UserError(f"mnist: the IDX file {names[0]} was not found: looked for {' or '.join(names)} "
                        f"(plain or .gz) in {places}; put the four MNIST files in one of these folders "
                        f"({self.published}), or point data.root (or the GAN_LAB_DATA folder) at them.")

    def source_files(self, split):
        return [self.find(split, "images"), self.find(split, "labels")]

    def build_split(self, split):
        image_file, label_file = self.source_files(split)
        images, labels = read_idx(image_file), read_idx(label_file)
        for path, array in ((image_file, images), (label_file, labels)):
            if array.dtype != np.uint8:
                raise UserError(f"{path} holds {array.dtype.name} values; MNIST files hold unsigned bytes "
                                f"(IDX type 0x08): {REDOWNLOAD}.")
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels) or 0 in images.shape:
            raise UserError(f"{image_file} ({images.shape}) and {label_file} ({labels.shape}) do not "
                            f"match; expected [N, 28, 28] images and [N] labels, N > 0.")
        bad = np.flatnonzero(labels >= self.num_classes)
        if bad.size:
            raise UserError(f"{label_file} has label {labels[bad[0]]} at index {bad[0]} ({bad.size} of its "
                            f"{len(labels)} labels are outside 0..{self.num_classes - 1}, the {self.num_classes} "
                            f"MNIST classes); {REDOWNLOAD}.")
        x = resize_uint8(torch.from_numpy(images.astype(np.uint8)).unsqueeze(1), self.image_size)
        n, h, w = images.shape
        return Split(images=x, labels=torch.from_numpy(labels.astype(np.int64)),
                     files=[f"{image_file.name}[{i}]" for i in range(n)],
                     source_sizes=torch.tensor([[w, h]], dtype=torch.long).expand(n, 2).clone())
