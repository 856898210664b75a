"""Folders of image files: any folder (``image_folder``), the Kaggle Monet paintings and the Kaggle
Pokemon sprites with their types.
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Annotated, Literal, Sequence

import torch
from pydantic import Field

from gan_lab.constraints import Count
from gan_lab.data.base import ValFraction
from gan_lab.data.cache import IMAGE_EXTENSIONS
from gan_lab.data.disk import FileImageDataModule, list_images
from gan_lab.errors import UserError

log = logging.getLogger("gan_lab")

#: the 18 Pokemon types, alphabetical: label i is POKEMON_TYPES[i] (without a ``types`` subset)
POKEMON_TYPES = ["Bug", "Dark", "Dragon", "Electric", "Fairy", "Fighting", "Fire", "Flying", "Ghost",
                 "Grass", "Ground", "Ice", "Normal", "Poison", "Psychic", "Rock", "Steel", "Water"]
#: lower-case type -> its spelling in POKEMON_TYPES
CANONICAL_TYPES = {t.lower(): t for t in POKEMON_TYPES}


class ImageFolder(FileImageDataModule):
    """Any folder of images: flat (unlabelled) or one sub-folder per class (sorted names).

    ``val_fraction`` of the images is held out as a fixed ``val`` split (0: none).
    """

    published = "your own images"
    layout = "image files (jpg, png, ...) directly in the folder, or one sub-folder of images per class"
    name = "image_folder"  # in cache file names and messages
    subfolder: str | None = None   # a sub-folder of root holding the images, used when present

    def __init__(self, root: str, image_size: Count = 64, channels: Literal[1, 3] = 3, val_fraction: ValFraction = 0.0,
                 **kwargs) -> None:
        super().__init__(root=root, image_size=image_size, **kwargs)
        self.channels, self.val_fraction = int(channels), float(val_fraction)
        self._files: list[tuple[Path, int]] | None = None

    @property
    def folder(self) -> Path:
        nested = self.root / self.subfolder if self.subfolder else None
        return nested if nested is not None and nested.is_dir() else self.root

    def classes(self) -> list[Path]:
        """Sub-folders holding images (one per class), or ``[]`` for a flat folder."""
        return sorted(p for p in self.folder.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and list_images(p))

    def check(self) -> None:
        super().check()
        if not self.folder.is_dir():
            raise self.missing(self.folder)
        self.files()

    def files(self) -> list[tuple[Path, int]]:
        if self._files is None:
            classes = self.classes()
            if classes:
                loose = list_images(self.folder)
                if loose:
                    log.warning("%s: %d images directly in %s are not in a class folder and are left out",
                                self.name, len(loose), self.folder)
                self.class_names = [p.name for p in classes]
                self._files = [(f, i) for i, p in enumerate(classes) for f in list_images(p)]
            else:
                self._files = [(f, 0) for f in list_images(self.folder)]
            self.num_classes = len(self.class_names)
            if not self._files:
                raise self.missing(self.folder, "no image file")
            self.report_unread(self._files)
        return self._files

    def report_unread(self, files: list[tuple[Path, int]]) -> None:
        """Warn of image files under the folder that the layout leaves out (nested too deep)."""
        read = {f for f, _ in files}
        unread = sorted(p for p in self.folder.rglob("*")
                        if p.suffix.lower() in IMAGE_EXTENSIONS and p not in read and p.is_file()
                        and not any(part.startswith(".") for part in p.relative_to(self.folder).parts))
        if unread:
            log.warning("%s: %d image files under %s are not read, such as %s: a class is one sub-folder of "
                        "images directly in %s (the layout: %s)", self.name, len(unread), self.folder,
                        unread[0].relative_to(self.folder), self.folder, self.layout)

    def items(self, split):
        files = self.files()  # a fixed validation split, independent of the run's seed
        perm = torch.randperm(len(files), generator=torch.Generator().manual_seed(1234)).tolist()
        n_val = int(round(len(files) * self.val_fraction))
        return [files[i] for i in sorted(perm[:n_val] if split == "val" else perm[n_val:])]


class Monet(ImageFolder):
    """Kaggle ``monet_jpg``: 300 Monet paintings, 256x256, unlabelled; ``root`` is that folder or its parent."""

    published = ("published as monet_jpg in the Kaggle competition 'gan-getting-started' "
                 "(https://www.kaggle.com/competitions/gan-getting-started/data)")
    layout = "a flat folder of .jpg paintings (monet_jpg/)"
    name = "monet"
    subfolder = "monet_jpg"

    def classes(self):
        return []


class Pokemon(ImageFolder):
    """Kaggle Pokemon sprites, labelled by primary type from ``pokemon.csv`` (``Name,Type1,Type2``) if present.

    Sprites without a row are skipped and reported.

    Args:
        types: only these primary types, as the classes in this order (null: all 18).
        csv_path: the type table when it is not ``root/pokemon.csv``.
    """

    published = ("published on Kaggle as 'kvpratama/pokemon-images-dataset' and "
                 "'vishalsubbiah/pokemon-images-and-types' (images/ and pokemon.csv)")
    layout = "the sprites (png or jpg) in the folder or in images/, and optionally pokemon.csv (Name,Type1,Type2)"
    name = "pokemon"
    subfolder = "images"

    def __init__(self, root: str, image_size: Count = 128,
                 types: Annotated[Sequence[str], Field(min_length=1)] | None = None,
                 csv_path: str | None = None, background="white", **kwargs) -> None:
        super().__init__(root=root, image_size=image_size, background=background, **kwargs)
        self.csv_path = Path(csv_path).expanduser() if csv_path else self.root / "pokemon.csv"
        self.types = list(types) if types else None
        self._names: dict[str, str] | None = None
        self._unlisted: list[Path] = []

    def type_table(self) -> dict[str, str] | None:
        """lower-case Name -> canonical primary type, or ``None`` without a csv; malformed rows,
        unknown types and conflicting rows raise :class:`UserError`."""
        if self._names is None and self.csv_path.is_file():
            path, expected = self.csv_path, "expected the Kaggle pokemon.csv (Name,Type1,Type2)"
            try:
                text = path.read_bytes().decode("utf-8-sig")
                lines = [(n, row) for n, row in enumerate(csv.reader(text.splitlines()), 1) if any(map(str.strip, row))]
            except UnicodeDecodeError as exc:
                raise UserError(f"{path} is not text (byte {exc.start} is not UTF-8); {expected}.") from None
            except csv.Error as exc:
                raise UserError(f"{path} is not a CSV file ({exc}); {expected}.") from None
            if not lines:
                raise UserError(f"{path} is empty; {expected}.")
            header = [f.strip().lower() for f in lines[0][1]]
            if "name" not in header or "type1" not in header:
                raise UserError(f"{path} has the columns {lines[0][1]}; {expected}.")
            at_name, at_type = header.index("name"), header.index("type1")
            if len(lines) == 1:
                raise UserError(f"{path} has no row below its header; {expected}, one row per Pokemon.")
            table, first = {}, {}
            for number, row in lines[1:]:
                if not max(at_name, at_type) < len(row) <= len(header):
                    raise UserError(f"{path} line {number} has {len(row)} column{'s' * (len(row) != 1)}, the header "
                                    f"{len(header)} ({','.join(lines[0][1])}); {expected}.")
                name, kind = row[at_name].strip(), row[at_type].strip()
                if not name:
                    continue
                if kind.lower() not in CANONICAL_TYPES:
                    raise UserError(f"{path} line {number}: {name} has type {kind!r}, not one of the 18 "
                                    f"types ({', '.join(POKEMON_TYPES)}).")
                kind = CANONICAL_TYPES[kind.lower()]
                if table.get(name.lower(), kind) != kind:
                    raise UserError(f"{path} line {number} gives {name} the type {kind} where line "
                                    f"{first[name.lower()]} gave {table[name.lower()]}; keep one row per Pokemon.")
                table[name.lower()] = kind
                first.setdefault(name.lower(), number)
            self._names = table
        return self._names

    def files(self):
        if self._files is not None:
            return self._files
        table = self.type_table()
        files = list_images(self.folder)
        if not files:
            raise self.missing(self.folder, "no sprite")
        if table is None:
            if self.types:
                raise UserError(f"data.types={self.types} needs the type table {self.csv_path} "
                                f"(Name,Type1,Type2); add it or drop data.types.")
            self._files = [(f, 0) for f in files]
            return self._files
        if self.types:
            unknown = [t for t in self.types if str(t).lower() not in CANONICAL_TYPES]
            if unknown:
                raise UserError(f"data.types has {unknown}, not Pokemon types; use some of "
                                f"{', '.join(POKEMON_TYPES)}.")
            self.class_names = [CANONICAL_TYPES[str(t).lower()] for t in self.types]
        else:
            self.class_names = list(POKEMON_TYPES)
        self.num_classes = len(self.class_names)
        index = {name: i for i, name in enumerate(self.class_names)}
        self._unlisted = [f for f in files if f.stem.lower() not in table]
        self._files = [(f, index[table[f.stem.lower()]]) for f in files if table.get(f.stem.lower()) in index]
        if not self._files:
            raise UserError(f"no sprite in {self.folder} has a primary type among {self.class_names} in "
                            f"{self.csv_path}; check data.types and that file names match the Name column.")
        return self._files

    def extra_sources(self):
        return [self.csv_path] if self.csv_path.is_file() else []

    def key_extra(self):
        return {"types": self.class_names}

    def build_split(self, split):
        data = super().build_split(split)
        if split == "train":
            data.skipped = sorted([*data.skipped, *(f"{self.display_name(f)}: no row in {self.csv_path.name}"
                                                    for f in self._unlisted)])
        return data
