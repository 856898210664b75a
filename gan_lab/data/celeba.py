"""CelebA (Liu et al., 2015), aligned and cropped faces: ``img_align_celeba/*.jpg`` (178x218) with
``list_eval_partition.txt`` (``<file> <0|1|2>``: train, val, test). Unlabelled: a centred square crop
(``data.crop``: ``center`` by default, or a side such as 140 or 108 as in many GAN papers), resized
to ``image_size`` (32 or 64 in the DCGAN course) once, and cached.
"""
from __future__ import annotations

from pathlib import Path

from gan_lab.data.disk import FileImageDataModule
from gan_lab.errors import UserError

PARTITIONS = {"train": 0, "val": 1, "test": 2}


class CelebA(FileImageDataModule):
    """CelebA faces; 3 channels, unlabelled. ``root`` holds ``img_align_celeba/`` and
    ``list_eval_partition.txt`` (also found under ``root/celeba/``, torchvision's layout)."""

    channels = 3
    num_classes = 1
    class_names = ["face"]
    extra_splits = ("test",)  # partition 2: for evaluation (evaluator.real_split=test)
    published = "published at https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (Align&Cropped Images)"
    layout = "img_align_celeba/*.jpg and list_eval_partition.txt"

    def __init__(self, root: str, image_size: int = 64, **kwargs) -> None:
        super().__init__(root=root, image_size=image_size, **kwargs)
        self._partition: dict[str, list[str]] | None = None

    @property
    def name(self) -> str:
        return "celeba"

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
        self.partition()

    def partition(self) -> dict[str, list[str]]:
        if self._partition is None:
            parts: dict[str, list[str]] = {k: [] for k in PARTITIONS}
            codes = {str(v): k for k, v in PARTITIONS.items()}
            path = self.partition_file
            for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) != 2 or fields[1] not in codes:
                    raise UserError(f"{path} line {number} reads {line.strip()!r}; expected "
                                    f"'<file>.jpg <0|1|2>' (0 train, 1 val, 2 test).")
                parts[codes[fields[1]]].append(fields[0])
            self._partition = parts
        return self._partition

    def extra_sources(self):
        return [self.partition_file]

    def items(self, split):
        images = self.folder / "img_align_celeba"
        return [(images / name, 0) for name in self.partition()[split]]
