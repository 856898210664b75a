"""CelebA (Liu et al., 2015) aligned faces, ``img_align_celeba/*.jpg``, split by ``list_eval_partition.txt``
(``<file> <0|1|2>``: train, val, test); unlabelled, cropped and resized once, cached.
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path

from gan_lab.data.cache import IMAGE_EXTENSIONS
from gan_lab.data.disk import FileImageDataModule
from gan_lab.errors import UserError

PARTITIONS = {"train": 0, "val": 1, "test": 2}


class CelebA(FileImageDataModule):
    """CelebA faces; 3 channels, unlabelled. ``root`` or ``root/celeba/`` holds the images and partition file."""

    class_names = ["face"]
    extra_splits = ("test",)  # partition 2: for evaluation (evaluator.real_split=test)
    published = "published at https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (Align&Cropped Images)"
    layout = "img_align_celeba/*.jpg and list_eval_partition.txt"

    @property
    def folder(self) -> Path:
        for folder in (self.root, self.root / "celeba"):
            if (folder / "img_align_celeba").is_dir():
                return folder
        raise self.missing(self.root / "img_align_celeba", "the image folder img_align_celeba/")

    @property
    def partition_file(self) -> Path:
        for folder in (self.folder, self.folder / "Eval", self.root):
            if (folder / "list_eval_partition.txt").is_file():
                return folder / "list_eval_partition.txt"
        raise self.missing(self.folder / "list_eval_partition.txt", "list_eval_partition.txt")

    def check(self) -> None:
        super().check()
        self.partition  # read, and refused when malformed, before any image is decoded

    @cached_property
    def partition(self) -> dict[str, list[str]]:
        """The image names of each split; refuses repeated names and a file without training images."""
        parts: dict[str, list[str]] = {k: [] for k in PARTITIONS}
        codes = {str(v): k for k, v in PARTITIONS.items()}
        path = self.partition_file
        expected = "expected '<file>.jpg <0|1|2>' lines (0 train, 1 val, 2 test), as published"
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise UserError(f"{path} is not text (byte {exc.start} is not UTF-8); {expected}.") from None
        seen: dict[str, int] = {}
        for number, line in enumerate(text.splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in codes:
                raise UserError(f"{path} line {number} reads {line.strip()!r}; {expected}.")
            name = fields[0]
            if "/" in name or "\\" in name or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                raise UserError(f"{path} line {number} names {name!r}, not an image file of img_align_celeba/ "
                                f"(such as 000001.jpg); {expected}.")
            if name in seen:
                raise UserError(f"{path} line {number} names {name} again (first on line {seen[name]}); "
                                f"{expected}, one per image.")
            seen[name] = number
            parts[codes[fields[1]]].append(name)
        if not seen:
            raise UserError(f"{path} is empty; {expected}.")
        if not parts["train"]:
            raise UserError(f"{path} lists no training image (partition 0) among its {len(seen)} lines; "
                            f"{expected}.")
        return parts

    def extra_sources(self):
        return [self.partition_file]

    def items(self, split):
        images = self.folder / "img_align_celeba"
        return [(images / name, 0) for name in self.partition[split]]
