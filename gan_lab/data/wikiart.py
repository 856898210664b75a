"""WikiArt with the genre / style / artist splits published with ArtGAN (Tan et al., 2017)."""
from __future__ import annotations

from pathlib import Path, PurePosixPath

from gan_lab.constraints import Count
from gan_lab.data.cache import IMAGE_EXTENSIONS
from gan_lab.data.disk import FileImageDataModule
from gan_lab.errors import UserError

TASKS = {"genre": 10, "style": 27, "artist": 23}


def find_dir(folder: Path, name: str) -> Path | None:
    if (folder / name).is_dir():
        return folder / name
    if not folder.is_dir():
        return None
    return min((p for p in folder.iterdir() if p.is_dir() and p.name.lower() == name.lower()), default=None)


def read_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of the non-blank lines; CRLF, CR and a BOM are handled."""
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def read_class_file(path: Path) -> list[str]:
    """``<index> <Name>`` lines -> names ordered by index (plain ``<Name>`` lines keep file order)."""
    names: dict[int, str] = {}
    for number, line in read_lines(path):
        first, _, rest = line.partition(" ")
        if first.isdigit() and rest.strip():
            index, name = int(first), rest.strip()
        else:
            index, name = len(names), line
        if index in names:
            raise UserError(f"{path} line {number} repeats class index {index}; expected one "
                            f"'<index> <Name>' line per class.")
        names[index] = name
    if not names:
        raise UserError(f"{path} is empty; expected one '<index> <Name>' line per class, as ArtGAN "
                        f"publishes it.")
    if sorted(names) != list(range(len(names))):
        raise UserError(f"{path} has class indices {sorted(names)}; expected 0..{len(names) - 1}.")
    return [names[i] for i in range(len(names))]


def is_image_path(name: str) -> bool:
    """A relative path to an image file under the images folder (not above it)."""
    path = PurePosixPath(name)
    return (path.suffix.lower() in IMAGE_EXTENSIONS and not path.is_absolute() and ".." not in path.parts
            and ":" not in path.parts[0])


def read_split_file(path: Path, num_classes: int) -> list[tuple[str, int]]:
    """Rows ``path,<class>`` or ``path,,<class>`` -> (relative path, class); skips a header, refuses an empty file."""
    rows = []
    for position, (number, line) in enumerate(read_lines(path)):
        head, _, last = line.rpartition(",")
        name = head.rstrip(",").strip().strip('"').replace("\\", "/")
        try:
            label = int(last.strip().strip('"'))
        except ValueError:
            if position == 0 and not is_image_path(name):
                continue  # the artist files' "(Path to image),, (Groundtruth class)" header
            raise UserError(f"{path} line {number} reads {line!r}; expected 'Folder/file.jpg,<class index>'.") from None
        if not name:
            raise UserError(f"{path} line {number} reads {line!r}; the image path is empty.")
        if not is_image_path(name):
            raise UserError(f"{path} line {number} names {name!r}, not an image file under the images folder; "
                            f"expected 'Folder/file.jpg,<class index>' rows.")
        if not 0 <= label < num_classes:
            raise UserError(f"{path} line {number} has class {label}, outside 0..{num_classes - 1} of the "
                            f"class file; the split and class files come from different tasks or versions.")
        rows.append((name, label))
    if not rows:
        raise UserError(f"{path} lists no image; expected 'Folder/file.jpg,<class index>' rows, as ArtGAN "
                        f"publishes them.")
    return rows


class WikiArt(FileImageDataModule):
    """WikiArt paintings labelled by ``task``: ``genre`` (10 classes), ``style`` (27) or ``artist`` (23); 3 channels.

    Images: one folder per style in ``root`` or ``root/wikiart/``. Split files (``Genre/genre_train.csv``, ...):
    in ``root``, ``root/WikiArt Dataset/`` or ``splits_dir``.
    """

    published = ("images in wikiart.zip and split files in 'WikiArt Dataset/', both published at "
                 "https://github.com/cs-chan/ArtGAN")

    def __init__(self, root: str, task: str = "genre", image_size: Count = 64,
                 splits_dir: str | None = None, **kwargs) -> None:
        super().__init__(root=root, image_size=image_size, **kwargs)
        if task not in TASKS:
            raise UserError(f"data.task={task!r} is not a WikiArt task; use one of {', '.join(TASKS)}.")
        self.task = task
        self.splits_dir = Path(splits_dir).expanduser() if splits_dir else None
        self.layout = (f"one folder of images per style (such as Impressionism/claude-monet_*.jpg) and "
                       f"{task.capitalize()}/{task}_train.csv, {task}_val.csv and {task}_class(.txt)")
        self.class_names = [f"{task}_{i}" for i in range(TASKS[task])]
        self.num_classes = TASKS[task]
        self._rows: dict[str, list[tuple[str, int]]] = {}

    @property
    def name(self) -> str:
        return f"wikiart_{self.task}"

    @property
    def task_dir(self) -> Path:
        candidates = [self.splits_dir] if self.splits_dir else [self.root, self.root / "WikiArt Dataset"]
        for folder in candidates:
            found = find_dir(folder, self.task.capitalize())
            if found is not None:
                return found
        raise self.missing(candidates[-1] / self.task.capitalize(), f"the {self.task} split folder")

    def split_file(self, kind: str) -> Path:
        """``<task>_<kind>`` in the task folder, with or without ``.csv``/``.txt``, in any case."""
        folder, stem = self.task_dir, f"{self.task}_{kind}"
        wanted = {f"{stem}{ext}".lower() for ext in ("", ".csv", ".txt")}
        found = min((p for p in folder.iterdir() if p.is_file() and p.name.lower() in wanted), default=None)
        if found is None:
            raise self.missing(folder / stem, f"the split file {stem}(.csv)")
        return found

    def check(self) -> None:
        super().check()
        self.class_names = read_class_file(self.split_file("class"))
        self.num_classes = len(self.class_names)
        for split in ("train", "val"):  # a damaged split file is refused before any image is decoded
            self.rows(split)

    def rows(self, split: str) -> list[tuple[str, int]]:
        if split not in self._rows:
            self._rows[split] = read_split_file(self.split_file(split), self.num_classes)
        return self._rows[split]

    def extra_sources(self):
        return [self.split_file("class"), self.split_file("train"), self.split_file("val")]

    def items(self, split):
        base = self.root / "wikiart" if (self.root / "wikiart").is_dir() else self.root
        return [(base / name, label) for name, label in self.rows(split)]
