"""CIFAR-10 from the python pickles of ``cifar-10-batches-py`` (Krizhevsky, 2009): 50,000 training
images in ``data_batch_1..5`` and 10,000 test images in ``test_batch`` (served as ``val``), 32x32
RGB, 10 classes named in ``batches.meta``. Served at 32 or resized (bicubic, antialiased) to e.g. 64
once, and cached.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from gan_lab.data.cache import Split
from gan_lab.data.disk import DiskImageDataModule
from gan_lab.data.mnist import resize_uint8
from gan_lab.errors import UserError

BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "val": ["test_batch"]}


def read_pickle(path: Path) -> dict:
    with open(path, "rb") as fh:
        try:
            raw = pickle.load(fh, encoding="bytes")
        except Exception as exc:  # noqa: BLE001 - a damaged download, explained
            raise UserError(f"{path} is not a CIFAR-10 python pickle ({type(exc).__name__}); re-download "
                            f"cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html.") from None
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}


class CIFAR10(DiskImageDataModule):
    """CIFAR-10; 3 channels, 10 classes. ``root`` is ``cifar-10-batches-py`` or its parent."""

    channels = 3
    num_classes = 10
    published = "published at https://www.cs.toronto.edu/~kriz/cifar.html as cifar-10-python.tar.gz"
    layout = "cifar-10-batches-py/ with data_batch_1..5, test_batch and batches.meta"

    def __init__(self, root: str, image_size: int = 32, **kwargs) -> None:
        super().__init__(root=root, image_size=image_size, **kwargs)
        self.class_names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                            "ship", "truck"]

    @property
    def name(self) -> str:
        return "cifar10"

    @property
    def folder(self) -> Path:
        for folder in (self.root / "cifar-10-batches-py", self.root):
            if (folder / "batches.meta").is_file():
                return folder
        raise self.missing(self.root / "cifar-10-batches-py", "cifar-10-batches-py/batches.meta")

    def check(self) -> None:
        super().check()
        meta = read_pickle(self.folder / "batches.meta")
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get("label_names", [])]
        if len(names) != self.num_classes:
            raise UserError(f"{self.folder / 'batches.meta'} lists {len(names)} classes, CIFAR-10 has 10; "
                            f"is this CIFAR-100? Re-download cifar-10-python.tar.gz.")
        self.class_names = names

    def source_files(self, split):
        files = [self.folder / name for name in BATCHES[split]]
        for f in files:
            if not f.is_file():
                raise self.missing(f, f"the batch file {f.name}")
        return files

    def build_split(self, split):
        images, labels, names = [], [], []
        for f in self.source_files(split):
            batch = read_pickle(f)
            data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            images.append(data)
            labels.extend(int(v) for v in batch["labels"])
            names.extend(f"{f.name}[{i}]" for i in range(len(data)))
        x = resize_uint8(torch.from_numpy(np.concatenate(images)), self.image_size)
        n = x.shape[0]
        return Split(images=x, labels=torch.tensor(labels, dtype=torch.long), files=names,
                     source_sizes=torch.tensor([[32, 32]], dtype=torch.long).expand(n, 2).clone())
