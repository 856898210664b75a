"""CIFAR-10 (Krizhevsky, 2009) from the pickles of ``cifar-10-batches-py``: ``data_batch_1..5`` train,
``test_batch`` served as ``val``; 32x32 RGB resized once to ``image_size``, cached.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from gan_lab.constraints import Count
from gan_lab.data.cache import Split, describe_value
from gan_lab.data.disk import DiskImageDataModule
from gan_lab.data.mnist import resize_uint8
from gan_lab.errors import UserError

BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "val": ["test_batch"]}
REDOWNLOAD = "re-download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html"
#: values of a row of ``data``: 32x32 pixels, red plane, then green, then blue
ROW = 3 * 32 * 32


def read_pickle(path: Path) -> dict:
    """A CIFAR-10 pickle: a dict, its byte-string keys decoded."""
    with open(path, "rb") as fh:
        try:
            raw = pickle.load(fh, encoding="bytes")
        except Exception as exc:  # noqa: BLE001 - a damaged download, explained
            raise UserError(f"{path} is not a CIFAR-10 python pickle ({type(exc).__name__}); {REDOWNLOAD}.") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path} holds a {type(raw).__name__}, not the dict of a CIFAR-10 python pickle; "
                        f"{REDOWNLOAD}.")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}


def as_array(value: object) -> np.ndarray | None:
    """An array or a (rectangular) list as an array; ``None`` for anything else."""
    if not isinstance(value, (np.ndarray, list, tuple)):
        return None
    try:
        return np.asarray(value)
    except ValueError:  # ragged lists
        return None


def read_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A batch file's images (uint8 ``[N, 3, 32, 32]``) and labels (int64 ``[N]``, in 0..num_classes-1)."""
    batch = read_pickle(path)
    missing = [key for key in ("data", "labels") if key not in batch]
    if missing:
        keys = ", ".join(map(str, batch)) or "none"
        hint = " (fine_labels: a CIFAR-100 file)" if "fine_labels" in batch else ""
        raise UserError(f"{path} has no {' and no '.join(missing)} key (its keys: {keys}{hint}); a CIFAR-10 "
                        f"batch holds data and labels: {REDOWNLOAD}.")
    data, labels = batch["data"], batch["labels"]
    array, values = as_array(data), as_array(labels)
    if (array is None or array.ndim != 2 or array.shape[0] == 0 or array.shape[1] != ROW
            or not np.issubdtype(array.dtype, np.integer)
            or (array.dtype != np.uint8 and (array.min() < 0 or array.max() > 255))):
        raise UserError(f"{path}: data is {describe_value(data)}; expected uint8 rows of {ROW} values (32x32 RGB), at "
                        f"least one: {REDOWNLOAD}.")
    if values is None or values.ndim != 1 or len(values) != len(array) or (
            len(values) and not np.issubdtype(values.dtype, np.integer)):
        raise UserError(f"{path}: labels are {describe_value(labels)} for {len(array)} rows of data; expected one "
                        f"class index per row: {REDOWNLOAD}.")
    bad = np.flatnonzero((values < 0) | (values >= num_classes))
    if bad.size:
        raise UserError(f"{path} has label {values[bad[0]]} at index {bad[0]} ({bad.size} of its {len(values)} labels "
                        f"are outside 0..{num_classes - 1}, the {num_classes} CIFAR-10 classes); {REDOWNLOAD}.")
    return array.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32), values.astype(np.int64)


class CIFAR10(DiskImageDataModule):
    """CIFAR-10; 3 channels, 10 classes. ``root`` is ``cifar-10-batches-py`` or its parent."""

    num_classes = 10
    class_names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    published = "published at https://www.cs.toronto.edu/~kriz/cifar.html as cifar-10-python.tar.gz"
    layout = "cifar-10-batches-py/ with data_batch_1..5, test_batch and batches.meta"

    def __init__(self, root: str, image_size: Count = 32, **kwargs) -> None:
        super().__init__(root=root, image_size=image_size, **kwargs)

    @property
    def folder(self) -> Path:
        for folder in (self.root / "cifar-10-batches-py", self.root):
            if (folder / "batches.meta").is_file():
                return folder
        raise self.missing(self.root / "cifar-10-batches-py", "cifar-10-batches-py/batches.meta")

    def check(self) -> None:
        super().check()
        path = self.folder / "batches.meta"
        meta = read_pickle(path)
        listed = meta.get("label_names")
        if not isinstance(listed, (list, tuple)):
            found = "no label_names" if listed is None else f"label_names as {describe_value(listed)}"
            keys = ", ".join(map(str, meta)) or "none"
            raise UserError(f"{path} has {found} (its keys: {keys}); expected the list of the 10 class names: "
                            f"{REDOWNLOAD}.")
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in listed]
        if len(names) != self.num_classes:
            raise UserError(f"{path} lists {len(names)} classes, CIFAR-10 has 10 (is this CIFAR-100?); "
                            f"{REDOWNLOAD}.")
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
            data, values = read_batch(f, self.num_classes)
            images.append(data)
            labels.extend(values.tolist())
            names.extend(f"{f.name}[{i}]" for i in range(len(data)))
        x = resize_uint8(torch.from_numpy(np.concatenate(images)), self.image_size)
        return Split(images=x, labels=torch.tensor(labels, dtype=torch.long), files=names,
                     source_sizes=torch.tensor([[32, 32]], dtype=torch.long).expand(len(x), 2).clone())
