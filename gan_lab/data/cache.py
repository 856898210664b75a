"""Decode once: a split of an on-disk dataset becomes one uint8 tensor file, keyed by its inputs.

Damaged caches are rebuilt; unreadable sources are skipped and listed in ``<dataset>-<split>-skipped.txt``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageFile
from torch import Tensor
from tqdm.auto import tqdm

from gan_lab.errors import SetupInterrupted, UserError
from gan_lab.fs import atomic_torch_save, atomic_write_text, remove_orphan_temp_files, write_problem, zip_damage

log = logging.getLogger("gan_lab")

#: bump when the decoding changes, so that old caches are rebuilt
CACHE_VERSION = 2
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated JPEG is reported as unreadable, not half grey


@dataclass
class Split:
    """A decoded split: images, labels and what is known of the sources."""

    images: Tensor                      # uint8 [N, C, S, S]
    labels: Tensor                      # int64 [N]
    files: list[str] = field(default_factory=list)         # source name of each image ('' if none)
    file_sizes: Tensor | None = None    # int64 [N] bytes on disk, None for array files
    source_sizes: Tensor | None = None  # int64 [N, 2] (width, height) before resizing
    skipped: list[str] = field(default_factory=list)       # "name: reason" per skipped source


def parse_crop(crop: str | int | None) -> str | int:
    """``data.crop`` as ``"center"``, ``"none"`` (also for ``None`` and ``resize``) or a side in source pixels."""
    named = {"none": "none", "resize": "none", "center": "center"}.get(str(crop).lower())  # None too
    if named:
        return named
    try:
        side = int(crop)
    except (TypeError, ValueError):
        side = 0
    if side < 1:
        raise UserError(f"data.crop={crop!r} is not a crop; use center, none or a side in source pixels "
                        f"(e.g. data.crop=140).")
    return side


def parse_background(background: str | Sequence[int]) -> tuple[int, int, int]:
    names = {"white": (255, 255, 255), "black": (0, 0, 0), "grey": (128, 128, 128), "gray": (128, 128, 128)}
    if isinstance(background, str):
        if background.lower() not in names:
            raise UserError(f"data.background={background!r} is not known; use white, black, grey or "
                            f"[r,g,b] in 0..255.")
        return names[background.lower()]
    rgb = tuple(int(v) for v in background)
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise UserError(f"data.background={list(background)} must be three values in 0..255, e.g. [255,255,255].")
    return rgb  # type: ignore[return-value]


#: Pillow's one-channel modes wider than 8 bits: 16- and 32-bit integers, 32-bit floats
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def eight_bit(img: Image.Image) -> Image.Image:
    """A one-channel image wider than 8 bits as 8-bit grey (``L``), scaled, not clipped: integers
    from 0..65535, floats from 0..1 when they stay in it (else 0..255). Other images pass unchanged."""
    if img.mode not in WIDE_MODES:
        return img
    values = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        values = values * 255.0 if values.size and values.min() >= 0.0 and values.max() <= 1.0 else values
    else:
        values = values / 257.0  # 65535 -> 255
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")


def decode_image(path: str | Path, image_size: int, channels: int = 3, crop: str | int = "center",
                 background: tuple[int, int, int] = (255, 255, 255)) -> tuple[np.ndarray, tuple[int, int]]:
    """One file -> uint8 ``[channels, image_size, image_size]`` and its source (width, height).

    Transparency is composited on ``background``; large JPEGs are decoded at a reduced scale (``Image.draft``).
    """
    with Image.open(path) as img:
        width, height = img.size
        if crop == "none":
            side, box = min(width, height), (0, 0, width, height)
        else:
            side = min(width, height) if crop == "center" else min(int(crop), width, height)
            box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
        if img.format == "JPEG" and side > 2 * image_size:
            factor = image_size / side
            img.draft("RGB" if channels == 3 else "L", (max(1, int(width * factor)), max(1, int(height * factor))))
            # the DCT scale (1, 2, 4 or 8): the crop box scales by 1 / scale, not by the size ratio
            scale = round(width / img.size[0])
            box = tuple(v / scale for v in box)
        img.load()
        img = eight_bit(img)
        if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
            rgba = img.convert("RGBA")
            flat = Image.new("RGBA", rgba.size, (*background, 255))
            flat.alpha_composite(rgba)
            img = flat
        img = img.convert("RGB" if channels == 3 else "L")
        img = img.resize((image_size, image_size), Image.Resampling.BICUBIC, box=box)
        array = np.asarray(img, dtype=np.uint8)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return np.ascontiguousarray(array), (width, height)


def file_signature(paths: Sequence[Path]) -> list[tuple[str, int, int]]:
    """(name, size, mtime in ns) per file; a missing file is (name, -1, -1)."""
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((str(p), st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((str(p), -1, -1))
    return out


def fallback_cache_dir(dataset: str, root: Path) -> Path:
    """The user cache folder for a read-only root: ``<XDG cache>/gan_lab/<dataset>/<root hash>``."""
    resolved = str(Path(root).expanduser().resolve())
    user_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gan_lab"
    return user_cache / dataset / hashlib.sha256(resolved.encode()).hexdigest()[:12]


def writable_dir(preferred: Path, fallback: Path) -> Path:
    """``preferred`` when it can be created and written, else ``fallback`` (a read-only data root)."""
    for candidate in (preferred, fallback):
        if write_problem(candidate) is None:
            if candidate != preferred:
                log.warning("cache folder %s is not writable; caching in %s instead", preferred, candidate)
            return candidate
    raise UserError(f"neither {preferred} nor {fallback} is writable for the decoded-image cache; "
                    f"set data.cache_dir=<a writable folder>.")


def decode_files(files: Sequence[Path], labels: Sequence[int], image_size: int, channels: int,
                 crop: str | int, background: tuple[int, int, int], workers: int, desc: str,
                 names: Sequence[str]) -> Split:
    """Decode ``files`` in parallel into a :class:`Split`; unreadable files are skipped and listed."""
    images = np.empty((len(files), channels, image_size, image_size), dtype=np.uint8)
    keep = np.zeros(len(files), dtype=bool)
    sizes = np.zeros((len(files), 2), dtype=np.int64)
    nbytes = np.zeros(len(files), dtype=np.int64)

    def one(i: int) -> str | None:
        """Decode file ``i`` into its row; its skip-list line when it cannot be read."""
        try:
            images[i], sizes[i] = decode_image(files[i], image_size, channels, crop, background)
            nbytes[i], keep[i] = os.path.getsize(files[i]), True
        except FileNotFoundError:
            return f"{names[i]}: missing"
        except Exception as exc:  # noqa: BLE001 - any decoder failure means "unreadable", reported
            return f"{names[i]}: unreadable ({type(exc).__name__}: {str(exc)[:120]})"
        return None

    with ThreadPoolExecutor(max_workers=workers or min(32, (os.cpu_count() or 1) + 2)) as pool:
        try:
            bar = tqdm(pool.map(one, range(len(files))), total=len(files), desc=desc, unit="img", mininterval=1.0,
                       leave=False, disable=not files)
            skipped = [line for line in bar if line is not None]
        except BaseException:  # Ctrl-C: stop after the files in progress, not after every queued one
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    idx = np.flatnonzero(keep)
    if len(idx) < len(files):  # copy only when something was skipped (a split can take GBs)
        images = images[idx]
    return Split(images=torch.from_numpy(images), labels=torch.as_tensor(np.asarray(labels)[idx], dtype=torch.long),
                 files=[names[i] for i in idx], file_sizes=torch.from_numpy(nbytes[idx]),
                 source_sizes=torch.from_numpy(sizes[idx]), skipped=sorted(skipped))


def split_damage(data: object, channels: int | None = None, image_size: int | None = None) -> str | None:
    """What is wrong with a loaded cache's content (a :class:`Split`'s fields), or ``None`` when it is sound."""
    if not isinstance(data, dict):
        return f"it holds a {type(data).__name__}, not a decoded split"
    expected = set(Split.__dataclass_fields__)
    if set(data) != expected:
        return f"its keys are {sorted(map(str, data))}, not {sorted(expected)}"
    images, labels = data["images"], data["labels"]
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        return f"its images are {describe_value(images)}, not uint8 [N, C, H, W]"
    n, shape = images.shape[0], tuple(images.shape[1:])
    want = (channels or shape[0], image_size or shape[1], image_size or shape[2])
    if shape != want:
        return f"its images are {n}x{list(shape)}, not {n}x{list(want)}"
    if not isinstance(labels, Tensor) or labels.dtype != torch.int64 or tuple(labels.shape) != (n,):
        return f"its labels are {describe_value(labels)}, not int64 [{n}]"
    if not isinstance(data["files"], list) or len(data["files"]) not in (0, n):
        return f"its file names are {describe_value(data['files'])}, not a list of {n}"
    for key, row in (("file_sizes", (n,)), ("source_sizes", (n, 2))):
        value = data[key]
        if value is not None and (not isinstance(value, Tensor) or tuple(value.shape) != row):
            return f"its {key} are {describe_value(value)}, not {list(row)}"
    if not isinstance(data["skipped"], list) or not all(isinstance(line, str) for line in data["skipped"]):
        return f"its skip list is {describe_value(data['skipped'])}, not a list of text"
    return None


def describe_value(value: object) -> str:
    """A value in a few words: a tensor's or an array's dtype and shape, a sequence's type and length."""
    if isinstance(value, Tensor):
        return f"{str(value.dtype).replace('torch.', '')} {list(value.shape)}"
    if isinstance(value, np.ndarray):
        return f"a {value.dtype.name} array of shape {value.shape}"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"


def load_cache(path: Path, channels: int | None = None, image_size: int | None = None) -> Split | None:
    """The split cached at ``path``; ``None``, with a one-line warning, when the file is damaged."""
    damage = zip_damage(path)
    if damage is None:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a damaged cache is rebuilt, never trusted
            damage = f"it cannot be loaded: {type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
        else:
            damage = split_damage(data, channels, image_size)
    if damage is not None:
        log.warning("cache %s is damaged (%s); rebuilding it", path, damage)
        return None
    return Split(**data)


def cached_split(cache_dir: Path, dataset: str, split: str, key_parts: dict,
                 build: Callable[[], Split]) -> Split:
    """Load ``<dataset>-<split>-<size>-<key>.pt`` from ``cache_dir``, or ``build()`` and save it atomically.

    Removes orphan temporary files, and older caches at that size when writing; rewrites the skip
    report. Ctrl-C raises :class:`SetupInterrupted`.
    """
    stem = f"{dataset}-{split}-{key_parts.get('image_size', 'x')}"
    key = json.dumps({"version": CACHE_VERSION, "dataset": dataset, "split": split, **key_parts}, sort_keys=True,
                     default=str)  # everything the split depends on
    path = cache_dir / f"{stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"
    report = cache_dir / f"{dataset}-{split}-skipped.txt"
    orphans = remove_orphan_temp_files(cache_dir, (".pt", "-skipped.txt"))
    if orphans:
        log.info("removed %d temporary files of interrupted cache writes from %s", len(orphans), cache_dir)
    doing = "loading"
    try:
        data = load_cache(path, key_parts.get("channels"), key_parts.get("image_size")) if path.is_file() else None
        if data is not None:
            log.info("%s/%s: %d images from cache %s", dataset, split, len(data.labels), path)
        else:
            doing = "decoding"
            data = build()
            for old in cache_dir.glob(f"{stem}-*.pt"):  # stale versions at this size
                if old != path:
                    old.unlink(missing_ok=True)
            atomic_torch_save(vars(data), path)
            log.info("%s/%s: decoded %d images into %s", dataset, split, len(data.labels), path)
        if data.skipped:
            atomic_write_text("".join(f"{line}\n" for line in data.skipped), report)
            log.warning("%s/%s: skipped %d files, missing, unreadable or unlabelled (listed in %s)",
                        dataset, split, len(data.skipped), report)
        else:
            report.unlink(missing_ok=True)
    except KeyboardInterrupt:
        again = "decodes it again" if doing == "decoding" else "loads it again"
        raise SetupInterrupted(f"interrupted (Ctrl-C) while {doing} {dataset}/{split} in {cache_dir}, before "
                               f"training; no file was left half-written, and the next run {again}.",
                               signum=int(signal.SIGINT)) from None
    return data
