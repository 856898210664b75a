"""Base DataModule: uint8 images in memory, converted and augmented on the device.

Data contract: a transferred batch is ``(images, labels)``, float NCHW in [-1, 1] and int64 labels (0 if unlabelled).
"""
from __future__ import annotations

from abc import abstractmethod
from typing import Annotated, Callable, Iterator, Sequence

import lightning as L
import numpy as np
import torch
from pydantic import Field
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from gan_lab.constraints import AnyInt, Count, Fraction, NonNegativeInt
from gan_lab.errors import UserError
from gan_lab.pixels import to_float


def take_rows(tensor: Tensor, indices: Sequence[int] | Tensor) -> Tensor:
    """``tensor[indices]`` along dim 0 (a numpy gather on the CPU)."""
    if tensor.device.type == "cpu":
        idx = indices.numpy() if isinstance(indices, Tensor) else np.asarray(indices, dtype=np.int64)
        return torch.from_numpy(tensor.numpy().take(idx, axis=0))
    idx = torch.as_tensor(indices, dtype=torch.long, device=tensor.device)
    return tensor.index_select(0, idx)


#: the largest image side a DataModule decodes to (a 4096x4096 RGB image is 48 MiB as uint8)
MAX_IMAGE_SIZE = 4096


#: the share of a dataset held out for validation (0: no validation split)
ValFraction = Annotated[float, Field(ge=0, lt=1)]


class TensorImages(Dataset):
    """uint8 images and int64 labels in memory; ``__getitems__`` slices a whole batch at once."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        assert images.dtype == torch.uint8 and images.dim() == 4, "images must be uint8 NCHW"
        assert labels.shape[0] == images.shape[0]
        self.images, self.labels = images, labels.long()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.images[i], self.labels[i]

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        return take_rows(self.images, indices), take_rows(self.labels, indices)


def collate_batch(batch):
    """Identity collate: ``TensorImages.__getitems__`` already returns a stacked batch."""
    return batch


class EpochSampler(Sampler[int]):
    """An order that depends only on (seed, epoch); ``skip_next`` resumes mid-epoch.

    Rank ``r`` takes positions ``r, r + world_size, ...``: ``n // world_size`` indices in all."""

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not one of the {world_size} ranks")
        self.n, self.seed, self.epoch, self.skip = n, seed, 0, 0
        self.rank, self.world_size = int(rank), int(world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip_next(self, n: int) -> None:
        """Start the next iteration (only) at position ``n`` of this rank's share."""
        self.skip = int(n)

    def __iter__(self) -> Iterator[int]:
        start, self.skip = self.skip, 0
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        return iter(order[self.rank::self.world_size][:len(self)][start:])

    def __len__(self) -> int:
        return self.n // self.world_size


class ImageDataModule(L.LightningDataModule):
    """Serves an image dataset following the data contract.

    Args:
        image_size: side of the served square images.
        drop_last: drop the last incomplete training batch.
        seed: seed of the data order.
        augment: applied to float training batches on the device, or ``None``.
        subset: train on a share (float in (0, 1)) or a count (int) of the training split, drawn from
            ``seed``; the whole split stays available as ``train_full``.
    """

    channels: int = 3
    num_classes: int = 1
    class_names: list[str] = ["image"]
    #: splits served besides ``train`` and ``val`` (for evaluation only), e.g. CelebA's ``test``
    extra_splits: tuple[str, ...] = ()

    def __init__(self, image_size: Count = 64, batch_size: Count = 64, num_workers: NonNegativeInt = 0,
                 drop_last: bool = True, seed: AnyInt = 0,
                 augment: Callable[[Tensor], Tensor] | None = None, subset: Fraction | Count | None = None) -> None:
        super().__init__()
        self.subset = subset
        if image_size > MAX_IMAGE_SIZE:  # a cheap bound before any decoding (the nets check their own sizes)
            raise UserError(f"data.image_size={image_size} is beyond what gan_lab decodes (at most {MAX_IMAGE_SIZE} "
                            f"pixels a side); e.g. data.image_size=64.")
        self.image_size, self.batch_size, self.num_workers = int(image_size), int(batch_size), int(num_workers)
        self.drop_last, self.seed, self.augment = drop_last, int(seed), augment
        self.splits: dict[str, TensorImages] = {}
        self.resolution: int | None = None  # served side when below image_size (progressive growing)
        #: draws of ``batch_size`` images per training batch (set by the entry point, see
        #: :func:`gan_lab.build.serve_draws`)
        self.draws_per_batch = 1

    def set_resolution(self, size: int | None) -> None:
        """Serve batches area-downsampled to ``size`` on the device; ``None`` serves ``image_size``."""
        if size is not None and (size > self.image_size or self.image_size % size):
            raise UserError(f"resolution {size} must divide data.image_size={self.image_size}; "
                            f"use a power of two up to {self.image_size}.")
        self.resolution = None if size in (None, self.image_size) else int(size)

    @property
    def name(self) -> str:
        return type(self).__name__.lower()

    def check(self) -> None:
        """Read the data's facts (its classes) and fail on missing data, without decoding any image."""

    @abstractmethod
    def load_split(self, split: str) -> tuple[Tensor, Tensor]:
        """uint8 images ``[N, channels, image_size, image_size]`` and int64 labels ``[N]`` of a split;
        raises :class:`UserError` naming the path when data is missing."""

    def setup(self, stage: str | None = None) -> None:
        for split in ("train", "val"):
            if split not in self.splits:
                self.splits[split] = TensorImages(*self.load_split(split))
                if split == "train" and self.subset is not None:
                    self.splits["train_full"] = self.splits["train"]
                    self.splits["train"] = self.subset_of(self.splits["train"])
        # each process trains on its share of the images (EpochSampler): n // world_size of them
        world_size = 1 if self.trainer is None else self.trainer.world_size
        n = len(self.splits["train"]) // world_size
        if self.drop_last and self.train_batch_size > n:
            draws = f" x {self.draws_per_batch} draws a batch (model.fresh_reals)" if self.draws_per_batch > 1 else ""
            each = f" each of the {world_size} processes gets" if world_size > 1 else ""
            raise UserError(f"data.batch_size={self.batch_size}{draws} is larger than the {n} training images{each} "
                            f"of {self.name} and drop_last is on, so no batch would be served; "
                            f"use data.batch_size<={n // self.draws_per_batch}.")

    @property
    def train_batch_size(self) -> int:
        """Images per training batch: ``draws_per_batch`` draws of ``batch_size``."""
        return self.batch_size * self.draws_per_batch

    def subset_of(self, full: TensorImages) -> TensorImages:
        """``data.subset`` of the training images: drawn from ``seed`` alone, in their original order."""
        n = len(full)
        k = int(round(n * self.subset)) if isinstance(self.subset, float) else int(self.subset)
        if not 1 <= k <= n:
            raise UserError(f"data.subset={self.subset} selects {k} of the {n} training images of {self.name}; "
                            f"choose between 1 and {n} images (or a share in (0, 1)).")
        index = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 7_919 + 17))[:k].sort().values
        return TensorImages(full.images[index], full.labels[index])

    def dataset(self, split: str = "train") -> TensorImages:
        """A split's images: ``train``, ``val``, or one of :attr:`extra_splits` (loaded on first use)."""
        if split not in self.splits:
            if split in ("train", "val") or (split == "train_full" and self.subset is not None):
                self.setup("fit")
            elif split in self.extra_splits:
                self.splits[split] = TensorImages(*self.load_split(split))
            else:
                raise UserError(f"{self.name} has no {split!r} split; use one of "
                                f"{', '.join(('train', 'val', *self.extra_splits))}.")
        return self.splits[split]

    def train_sampler(self) -> EpochSampler:
        """This process's training order: its rank's share of the epoch (sharded here, not by the Trainer)."""
        n = len(self.dataset("train"))
        if self.trainer is None:
            return EpochSampler(n, self.seed)
        return EpochSampler(n, self.seed, rank=self.trainer.global_rank, world_size=self.trainer.world_size)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset("train"), batch_size=self.train_batch_size, sampler=self.train_sampler(),
                          drop_last=self.drop_last, num_workers=self.num_workers,
                          collate_fn=collate_batch, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset("val"), batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers, collate_fn=collate_batch)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = to_float(batch[0]), batch[1]
        if self.resolution is not None and images.shape[-1] != self.resolution:
            images = torch.nn.functional.adaptive_avg_pool2d(images, self.resolution)
        if self.augment is not None and self.trainer is not None and self.trainer.training:
            images = self.augment(images)
        return images, labels

    def batches(self, split: str = "train", device: torch.device | str = "cpu",
                batch_size: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """Contract-conforming float batches outside a Trainer (metrics, nearest neighbours)."""
        ds = self.dataset(split)
        bs = batch_size or self.batch_size
        for images, labels in zip(ds.images.split(bs), ds.labels.split(bs)):
            yield to_float(images.to(device)), labels.to(device)
