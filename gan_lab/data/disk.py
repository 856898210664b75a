"""DataModules over datasets on disk: a root folder, a decoded-once cache, GPU-resident serving."""
from __future__ import annotations

import logging
import math
from abc import abstractmethod
from functools import cached_property
from pathlib import Path
from typing import Annotated, Iterator

import torch
from pydantic import Field
from torch import Tensor
from torch.utils.data import DataLoader

from gan_lab.constraints import Count, NonNegativeInt
from gan_lab.data.base import EpochSampler, ImageDataModule, TensorImages, take_rows
from gan_lab.data.cache import (IMAGE_EXTENSIONS, Split, cached_split, decode_files, fallback_cache_dir,
                                file_signature, parse_background, parse_crop, writable_dir)
from gan_lab.errors import UserError

log = logging.getLogger("gan_lab")

#: ``on_device=auto`` keeps the training split on the GPU when it takes at most this share of free memory
ON_DEVICE_SHARE = 0.25


class DeviceLoader:
    """Serves batches by indexing tensors on the training device, in the :class:`EpochSampler`'s order."""

    def __init__(self, dataset: TensorImages, batch_size: int, device: torch.device | str,
                 sampler: EpochSampler, drop_last: bool = True) -> None:
        self.images, self.labels = dataset.images.to(device), dataset.labels.to(device)
        self.batch_size, self.sampler, self.drop_last = int(batch_size), sampler, drop_last

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = torch.as_tensor(list(iter(self.sampler)), dtype=torch.long)
        n = len(order) // self.batch_size * self.batch_size if self.drop_last else len(order)
        for idx in order[:n].to(self.images.device, non_blocking=True).split(self.batch_size):
            yield take_rows(self.images, idx), take_rows(self.labels, idx)


#: one colour channel of a background
Channel = Annotated[int, Field(ge=0, le=255)]


class DiskImageDataModule(ImageDataModule):
    """A dataset read from ``root`` and served from its decoded-once cache.

    Args:
        root: dataset folder (``${oc.env:GAN_LAB_DATA,data}/<name>`` in the configs).
        crop: ``center`` (largest centred square), ``none`` (squash the whole image) or a side in
            source pixels (centred square of that side); then resized.
        background: colour under transparent pixels (``white``, ``black``, ``grey`` or [r, g, b]).
        cache_dir: folder of the decoded caches; ``None`` is ``<root>/.gan_lab_cache``, or a
            user cache folder when the root is read-only.
        decode_workers: threads decoding files when a cache is built (0: CPU count + 2).
        on_device: ``auto`` serves the training split from CUDA memory when it fits :data:`ON_DEVICE_SHARE`
            of the free memory; ``true`` always from the training device; ``false`` through a DataLoader.
    """

    #: where the dataset is published, for the missing-data message
    published: str = ""
    #: the layout expected under ``root``, for the missing-data message
    layout: str = ""

    def __init__(self, root: str, image_size: Count = 64, crop: str | Count = "center",
                 background: str | tuple[Channel, Channel, Channel] = "white", cache_dir: str | None = None,
                 decode_workers: NonNegativeInt = 0, on_device: str | bool = "auto", **kwargs) -> None:
        super().__init__(image_size=image_size, **kwargs)
        self.root = Path(root).expanduser()
        self.crop, self.background = parse_crop(crop), parse_background(background)
        self._cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.decode_workers, self.on_device = int(decode_workers), str(on_device).lower()
        if self.on_device not in ("auto", "true", "false"):
            raise UserError(f"data.on_device={on_device!r} must be auto, true or false.")
        self.info: dict[str, Split] = {}

    @cached_property
    def cache_folder(self) -> Path:
        preferred = self._cache_dir or self.root / ".gan_lab_cache"
        return writable_dir(preferred, fallback_cache_dir(self.name, self.root))

    def missing(self, path: Path, what: str = "the dataset") -> UserError:
        """``what`` was not found at ``path``; or, for ``what`` such as "no image file", ``path`` holds none."""
        where = path.absolute()
        found = f"{where} holds {what}" if what.startswith("no ") else f"{what} was not found at {where}"
        return UserError(f"{self.name}: {found}; expected {self.layout} "
                         f"under data.root={self.root} ({self.published}); put it there, or point data.root "
                         f"(or the GAN_LAB_DATA folder) at it.")

    def check(self) -> None:
        """Fail when the root is absent (subclasses also read their class lists)."""
        if not self.root.is_dir():
            raise self.missing(self.root)

    @abstractmethod
    def source_files(self, split: str) -> list[Path]:
        """Every file the decoded split depends on (its names, sizes and times key the cache)."""

    @abstractmethod
    def build_split(self, split: str) -> Split:
        """Decode the split from its sources (called only when no valid cache exists)."""

    def key_extra(self) -> dict:
        """Options of a subclass that change the decoded split (they join the cache key)."""
        return {}

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.check()
        super().setup(stage)

    def load_split(self, split: str) -> tuple[Tensor, Tensor]:
        key = {"image_size": self.image_size, "channels": self.channels, "crop": self.crop,
               "background": self.background, "sources": file_signature(self.source_files(split)),
               **self.key_extra()}
        data = cached_split(self.cache_folder, self.name, split, key, lambda: self.build_split(split))
        self.info[split] = data
        if split == "train" and len(data.labels) == 0 and data.skipped:
            raise UserError(f"{self.name}: none of the {len(data.skipped)} training files could be read "
                            f"(listed in {self.cache_folder / f'{self.name}-train-skipped.txt'}); check the "
                            f"files under data.root={self.root}.")
        bad = ((data.labels < 0) | (data.labels >= self.num_classes)).nonzero()
        if len(bad):
            i = int(bad[0])
            raise UserError(f"{self.name}/{split}: image {i} has label {int(data.labels[i])}, outside the classes "
                            f"0..{self.num_classes - 1} (decoded into {self.cache_folder}); check or re-download "
                            f"the files under data.root={self.root}.")
        return data.images, data.labels

    # --- serving -----------------------------------------------------------------------------
    def serving_device(self) -> torch.device | None:
        """The device a :class:`DeviceLoader` serves on, or ``None`` for a DataLoader."""
        if self.on_device == "false":
            return None
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        if self.on_device == "true":
            return device
        if device.type != "cuda":
            return None
        free, _ = torch.cuda.mem_get_info(device)
        need = self.dataset("train").images.nbytes
        if need > ON_DEVICE_SHARE * free:
            log.info("%s: training split (%.1f GB) kept in host memory (%.1f GB free on %s)",
                     self.name, need / 1e9, free / 1e9, device)
            return None
        return device

    def train_dataloader(self) -> DataLoader | DeviceLoader:
        device = self.serving_device()
        if device is None:
            return super().train_dataloader()
        ds = self.dataset("train")
        log.info("%s: serving %d training images from %s memory", self.name, len(ds), device)
        return DeviceLoader(ds, self.train_batch_size, device, self.train_sampler(), self.drop_last)


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (by extension, hidden files left out), sorted by name."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)


class FileImageDataModule(DiskImageDataModule):
    """One image file per sample: subclasses list ``(path, label)`` items of a split."""

    @abstractmethod
    def items(self, split: str) -> list[tuple[Path, int]]:
        """The files of a split and their labels (a listed file may be missing: it is reported)."""

    def extra_sources(self) -> list[Path]:
        """Index files (split lists, class lists, label tables) that join the cache key."""
        return []

    def source_files(self, split: str) -> list[Path]:
        return [*self.extra_sources(), *(p for p, _ in self.items(split))]

    def build_split(self, split: str) -> Split:
        items = self.items(split)
        return decode_files([p for p, _ in items], [label for _, label in items], self.image_size,
                            self.channels, self.crop, self.background, self.decode_workers,
                            desc=f"{self.name}/{split}", names=[self.display_name(p) for p, _ in items])

    def display_name(self, path: Path) -> str:
        return str(path.relative_to(self.root) if path.is_relative_to(self.root) else path)
