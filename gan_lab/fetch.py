"""Download a dataset into ``data.root``: ``python -m gan_lab.fetch data=<name> [fetch.mirror=URL]``.

Checks each file (published MD5, or size and SHA-256 recorded at the first download), resumes downloads and
extracts archives atomically; ``fetch.mirror`` (or ``GAN_LAB_MIRROR``) fetches ``<mirror>/<file name>`` instead.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from tqdm import tqdm

from gan_lab import CONFIG_DIR
from gan_lab.build import build_datamodule
from gan_lab.errors import UserError, exit_on_user_error

RECORD = ".gan_lab_fetch.json"


@dataclass(frozen=True)
class Source:
    """One file of a dataset: its name, addresses (tried in order), published MD5 (``None``: none),
    the paths it provides under the root, and ``extract`` for an archive unpacked there."""

    name: str
    urls: tuple[str, ...]
    md5: str | None
    provides: tuple[str, ...]
    extract: bool = False


@dataclass(frozen=True)
class Dataset:
    sources: tuple[Source, ...] = ()
    page: str = ""            # where to download by hand (Kaggle datasets)
    kaggle: str = ""          # `competitions/<name>` or `datasets/<owner>/<name>`
    layout: str = ""          # where the files go


def _mnist() -> Dataset:
    from torchvision.datasets import MNIST

    return Dataset(tuple(Source(name, tuple(m + name for m in MNIST.mirrors), md5, (name,))
                         for name, md5 in MNIST.resources))


def _cifar10() -> Dataset:
    from torchvision.datasets import CIFAR10

    return Dataset((Source(CIFAR10.filename, (CIFAR10.url,), CIFAR10.tgz_md5, (CIFAR10.base_folder,), True),))


def _celeba() -> Dataset:
    from torchvision.datasets import CelebA

    wanted = ("img_align_celeba.zip", "list_eval_partition.txt")  # the images (unpacked) and the splits
    return Dataset(tuple(Source(name, (f"https://drive.google.com/uc?export=download&id={fid}",), md5,
                                (name.removesuffix(".zip"),), name.endswith(".zip"))
                         for fid, md5, name in CelebA.file_list if name in wanted))


ARTGAN = "http://web.fsktm.um.edu.my/~cschan/source/ICIP2017/"
DATASETS = {
    "mnist": _mnist,
    "cifar10": _cifar10,
    "celeba": _celeba,
    "wikiart": lambda: Dataset((Source("wikiart.zip", (ARTGAN + "wikiart.zip",), None, ("wikiart",), True),
                                Source("wikiart_csv.zip", (ARTGAN + "wikiart_csv.zip",), None,
                                       ("WikiArt Dataset",), True))),
    "monet": lambda: Dataset(page="https://www.kaggle.com/competitions/gan-getting-started/data",
                             kaggle="competitions/gan-getting-started", layout="the jpg files of monet_jpg/"),
    "pokemon": lambda: Dataset(page="https://www.kaggle.com/datasets/kvpratama/pokemon-images-dataset",
                               kaggle="datasets/kvpratama/pokemon-images-dataset",
                               layout="the sprites (or their images/ folder), with pokemon.csv if you have it"),
}


def digest_of(path: Path, algorithm: str) -> str:
    """The hex digest of the file at ``path`` (``algorithm``: ``"md5"``, ``"sha256"``)."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def partial(target: Path) -> Path:
    """Where the download of ``target`` is written until it is complete."""
    return target.with_name(target.name + ".part")


def download(url: str, target: Path) -> None:
    """Download ``url`` to ``target`` through ``<target>.part``, continuing a leftover one (HTTP Range)."""
    part = partial(target)
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=60) as response:
        if have and response.status != 206:  # the server cannot continue: start again
            have = 0
        total = response.length + have if response.length is not None else None
        with open(part, "ab" if have else "wb") as out, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                                             desc=target.name, file=sys.stderr) as bar:
            try:
                for chunk in iter(lambda: response.read(1 << 16), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
            except http.client.IncompleteRead as cut:  # the connection ended early: keep what came
                out.write(cut.partial)
    if total is not None and part.stat().st_size != total:
        raise UserError(f"the download of {url} stopped at {part.stat().st_size:,} of {total:,} bytes; run the "
                        f"same fetch again to continue it.")
    os.replace(part, target)


def fetch_file(source: Source, root: Path, mirror: str | None, record: dict) -> Path:
    """The file in ``root``, downloaded (or continued) and checked; a file failing its check is
    removed (:class:`UserError`)."""
    target = root / source.name
    urls = [mirror.rstrip("/") + "/" + source.name] if mirror else list(source.urls)
    if not target.exists():
        errors = []
        for url in urls:
            try:
                download(url, target)
                break
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", None) or exc
                errors.append(f"{url} ({reason})")
        else:
            raise UserError(f"{source.name} could not be downloaded from {'; '.join(errors)}; check the network or "
                            f"give a mirror that has it with fetch.mirror=<url>.")
    if source.md5 is not None:
        found = digest_of(target, "md5")
        if found != source.md5:
            target.unlink()
            raise UserError(f"{source.name} from {urls[0]} has MD5 {found}, not the published {source.md5} (a damaged "
                            f"or altered file); it was removed: fetch again, or use another mirror.")
        return target
    size, digest = target.stat().st_size, digest_of(target, "sha256")
    known = record.get(source.name)
    if known and (known["size"], known["sha256"]) != (size, digest):
        target.unlink()
        raise UserError(f"{source.name} from {urls[0]} ({size:,} bytes, SHA-256 {digest}) is not the file first "
                        f"fetched into this folder ({known['size']:,} bytes, SHA-256 {known['sha256']}); it was "
                        f"removed: fetch again, or delete {RECORD} to accept a new version.")
    if not known:
        record[source.name] = {"size": size, "sha256": digest}
        print(f"gan_lab: {source.name}: no checksum is published; recorded {size:,} bytes, SHA-256 {digest} "
              f"in {root / RECORD}", file=sys.stderr)
    return target


def extract(archive: Path, root: Path) -> None:
    """Unpack ``archive`` into a temporary folder in ``root``, move its top-level entries into place,
    then remove the archive."""
    from torchvision.datasets.utils import extract_archive

    with tempfile.TemporaryDirectory(dir=root, prefix=".extracting-") as tmp:
        try:
            extract_archive(str(archive), tmp)
        except Exception as exc:  # noqa: BLE001 - any archive error is the archive's
            raise UserError(f"{archive} cannot be extracted ({type(exc).__name__}: {exc}); delete it and fetch "
                            f"again.") from None
        for entry in Path(tmp).iterdir():
            destination = root / entry.name
            if destination.is_dir():
                shutil.rmtree(destination)
            os.replace(entry, destination)
    archive.unlink()


def fetch(name: str, root: Path, mirror: str | None = None, dataset: Dataset | None = None) -> list[str]:
    """Fetch dataset ``name`` into ``root``; returns the names of the files downloaded (none when
    everything was in place)."""
    if name not in DATASETS:
        raise UserError(f"data={name} cannot be fetched; gan_lab fetches {', '.join(sorted(DATASETS))} "
                        f"(digits are bundled; image_folder is your own).")
    dataset = dataset or DATASETS[name]()
    root.mkdir(parents=True, exist_ok=True)
    if not dataset.sources:
        return fetch_from_kaggle(name, dataset, root)
    record_path = root / RECORD
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    fetched = []
    for source in dataset.sources:
        if all((root / p).exists() for p in source.provides) and not partial(root / source.name).exists():
            continue
        path = fetch_file(source, root, mirror, record)
        record_path.write_text(json.dumps(record, indent=2))
        fetched.append(source.name)
        if source.extract:
            extract(path, root)
    return fetched


def fetch_from_kaggle(name: str, dataset: Dataset, root: Path) -> list[str]:
    """Fetch a Kaggle dataset (Monet, Pokemon) with the ``kaggle`` package; refused without Kaggle credentials."""
    has_credentials = (Path.home() / ".kaggle" / "kaggle.json").is_file() or (
        os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"))
    if not has_credentials:
        raise UserError(f"data={name} comes from Kaggle and no Kaggle credentials are set (~/.kaggle/kaggle.json or "
                        f"KAGGLE_USERNAME/KAGGLE_KEY); download it from {dataset.page} and put {dataset.layout} "
                        f"in {root}.")
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError:
        raise UserError(f"data={name} is fetched from Kaggle with the kaggle package, which is not installed; "
                        f"pip install kaggle, or download it from {dataset.page} into {root}.") from None
    api = KaggleApi()
    api.authenticate()
    kind, _, ref = dataset.kaggle.partition("/")
    with tempfile.TemporaryDirectory(dir=root, prefix=".downloading-") as tmp:
        download_files = api.competition_download_files if kind == "competitions" else api.dataset_download_files
        download_files(ref, path=tmp)
        archives = list(Path(tmp).glob("*.zip"))
        for archive in archives:
            extract(archive, root)
    return [a.name for a in archives]


def summary(cfg: DictConfig) -> str:
    """What training will read: images per split and classes (at any batch size)."""
    cfg = cfg.copy()
    cfg.data.batch_size = 1
    dm = build_datamodule(cfg)
    splits = []
    for split in ("train", "val"):
        try:
            splits.append(f"{len(dm.dataset(split)):,} {split}")
        except (KeyError, ValueError):
            continue
    return f"{dm.name}: {', '.join(splits)} images, {dm.num_classes} class(es), in {cfg.data.root}"


def run(cfg: DictConfig) -> None:
    choice = HydraConfig.get().runtime.choices.get("data") if HydraConfig.initialized() else cfg.data.get("name")
    name = "wikiart" if str(choice).startswith("wikiart") else str(choice)  # the three WikiArt tasks share one
    mirror = cfg.fetch.get("mirror") or os.environ.get("GAN_LAB_MIRROR") or None
    fetched = fetch(name, Path(cfg.data.root), mirror)
    print(f"gan_lab: fetched {', '.join(fetched)}" if fetched else f"gan_lab: {name} is already in {cfg.data.root}")
    print(f"gan_lab: {summary(cfg)}")


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="fetch")
def main(cfg: DictConfig) -> None:
    exit_on_user_error(run, cfg)


if __name__ == "__main__":
    main()
