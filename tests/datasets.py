"""Tiny datasets written in exactly the on-disk formats gan_lab reads (no download)."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


#: IDX type codes of the dtypes the tests write
IDX_CODES = {"u1": 0x08, ">f4": 0x0D}


def write_idx(path: Path, array: np.ndarray, dtype: str = "u1") -> Path:
    """IDX: two zero bytes, a type code (0x08: uint8), number of dims, big-endian sizes, data."""
    header = bytes([0, 0, IDX_CODES[dtype], array.ndim]) + b"".join(struct.pack(">i", d) for d in array.shape)
    data = header + array.astype(dtype).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)
    return path


def make_mnist(root: Path, n_train: int = 12, n_test: int = 4, layout: str = "official") -> Path:
    """Train files plain, test files gzipped; image i is filled with 20 * label.

    ``layout``: ``official`` (dashed names in ``root``), ``kaggle`` (the Kaggle copy's dotted names,
    ``train-images.idx3-ubyte``, in ``root``) or ``torchvision`` (dashed names in ``root/MNIST/raw``).
    """
    folder = root / "MNIST" / "raw" if layout == "torchvision" else root
    folder.mkdir(parents=True, exist_ok=True)
    sep = "." if layout == "kaggle" else "-"
    for prefix, n, suffix in (("train", n_train, ""), ("t10k", n_test, ".gz")):
        labels = np.arange(n) % 10
        images = np.repeat((labels * 20).astype(np.uint8)[:, None, None], 28, 1).repeat(28, 2)
        write_idx(folder / f"{prefix}-images{sep}idx3-ubyte{suffix}", images)
        write_idx(folder / f"{prefix}-labels{sep}idx1-ubyte{suffix}", labels)
    return root


CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_cifar10(root: Path, per_batch: int = 2) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        labels = [(i * per_batch + j) % 10 for j in range(per_batch)]
        data = rng.integers(0, 256, (per_batch, 3 * 32 * 32), dtype=np.uint8)
        with open(folder / name, "wb") as fh:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                         b"filenames": [f"{name}_{j}.png".encode() for j in range(per_batch)]}, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [n.encode() for n in CIFAR_NAMES], b"num_vis": 3072,
                     b"num_cases_per_batch": per_batch}, fh)
    return root


def save_jpg(path: Path, size: tuple[int, int], color=(200, 50, 50)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, quality=95)
    return path


def make_celeba(root: Path) -> Path:
    """Six 'faces' 18x22 (aligned CelebA's aspect): a white centre square on black, so the centre
    crop is visible; partition 4 train, 1 val, 1 test."""
    names = [f"{i:06d}.jpg" for i in range(1, 7)]
    for name in names:
        img = Image.new("RGB", (18, 22), (0, 0, 0))
        img.paste((255, 255, 255), (0, 2, 18, 20))
        (root / "img_align_celeba").mkdir(parents=True, exist_ok=True)
        img.save(root / "img_align_celeba" / name, quality=95)
    codes = [0, 0, 0, 0, 1, 2]
    (root / "list_eval_partition.txt").write_text("".join(f"{n} {c}\n" for n, c in zip(names, codes)))
    return root


def make_wikiart(root: Path) -> Path:
    """A WikiArt tree with ArtGAN's split files and the quirks users hit: CRLF line ends, blank
    lines, parentheses in a name, split files without extensions, the artist header and empty
    middle column, a class name (Art_Nouveau) unlike its folder (Art_Nouveau_Modern), one corrupt
    jpeg and one listed file that does not exist."""
    art = root / "wikiart"
    save_jpg(art / "Impressionism" / "claude-monet_water-lilies.jpg", (40, 30), (20, 60, 200))
    save_jpg(art / "Impressionism" / "claude-monet_poplars.jpg", (30, 40), (30, 160, 60))
    save_jpg(art / "Art_Nouveau_Modern" / "gustav-klimt_garbage-dump-1883(1).jpg", (32, 32), (220, 200, 40))
    save_jpg(art / "Realism" / "ivan-shishkin_forest.jpg", (36, 24), (90, 90, 90))
    (art / "Realism" / "vincent-van-gogh_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    splits = root / "WikiArt Dataset"
    for d in ("Genre", "Style", "Artist"):
        (splits / d).mkdir(parents=True, exist_ok=True)
    crlf = lambda lines: "\r\n".join(lines).encode()  # noqa: E731
    (splits / "Genre" / "genre_class").write_bytes(crlf(["0 landscape", "1 portrait", "2 still_life", ""]))
    (splits / "Genre" / "genre_train.csv").write_bytes(crlf([
        "Impressionism/claude-monet_water-lilies.jpg,0", "",
        "Art_Nouveau_Modern/gustav-klimt_garbage-dump-1883(1).jpg,2",
        "Realism/vincent-van-gogh_corrupt.jpg,1",
        "Realism/does-not-exist.jpg,1", "Impressionism/claude-monet_poplars.jpg,0", "", ""]))
    (splits / "Genre" / "genre_val.csv").write_bytes(crlf(["Realism/ivan-shishkin_forest.jpg,0"]))
    (splits / "Style" / "style_class.txt").write_text("0 Art_Nouveau\n1 Impressionism\n2 Realism\n")
    (splits / "Style" / "style_train.csv").write_text(
        "Art_Nouveau_Modern/gustav-klimt_garbage-dump-1883(1).jpg,0\nImpressionism/claude-monet_poplars.jpg,1\n")
    (splits / "Style" / "style_val.csv").write_text("Realism/ivan-shishkin_forest.jpg,2\n")
    (splits / "Artist" / "artist_class").write_bytes(crlf(["0 claude_monet", "1 gustav_klimt", "2 ivan_shishkin"]))
    (splits / "Artist" / "artist_train").write_bytes(crlf([
        "(Path to image),, (Groundtruth class)", "",
        "Impressionism/claude-monet_water-lilies.jpg,,0",
        "Art_Nouveau_Modern/gustav-klimt_garbage-dump-1883(1).jpg,,1", ""]))
    (splits / "Artist" / "artist_val").write_bytes(crlf([
        "(Path to image),, (Groundtruth class)", "", "Realism/ivan-shishkin_forest.jpg,,2"]))
    return root


POKEMON = [("bulbasaur", "Grass"), ("charmander", "Fire"), ("squirtle", "Water"), ("vulpix", "Fire"),
           ("psyduck", "Water")]


def make_pokemon(root: Path, with_csv: bool = True) -> Path:
    """RGBA sprites: transparent background, an opaque red 4x4 centre; one sprite (mew) has no
    row in pokemon.csv."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    for name, _ in [*POKEMON, ("mew", "Psychic")]:
        img = Image.new("RGBA", (12, 12), (0, 0, 0, 0))
        img.paste((255, 0, 0, 255), (4, 4, 8, 8))
        img.save(images / f"{name}.png")
    if with_csv:
        (root / "pokemon.csv").write_text("Name,Type1,Type2\n" + "".join(
            f"{n},{t},{'Poison' if n == 'bulbasaur' else ''}\n" for n, t in POKEMON))
    return root


def make_monet(root: Path, n: int = 5) -> Path:
    for i in range(n):
        save_jpg(root / "monet_jpg" / f"{i:010x}.jpg", (24, 24), (40 * i, 100, 180))
    return root


def make_image_folder(root: Path) -> Path:
    for cls, color in (("cats", (250, 10, 10)), ("dogs", (10, 10, 250))):
        for i in range(3):
            save_jpg(root / cls / f"{i}.jpg", (20, 16), color)
    return root


# --- damaged copies: each builder writes a dataset with one defect and returns the damaged file -----

def truncate(path: Path, keep: int) -> Path:
    """Keep the first ``keep`` bytes of ``path`` (a negative ``keep`` drops that many from the end)."""
    path.write_bytes(path.read_bytes()[:keep])
    return path


def flip_bytes(path: Path, offset: int, count: int) -> Path:
    """Invert ``count`` bytes of ``path`` from ``offset``, as a disk or a copy damages them."""
    data = bytearray(path.read_bytes())
    data[offset:offset + count] = bytes(b ^ 0xFF for b in data[offset:offset + count])
    path.write_bytes(bytes(data))
    return path


def write_pickle(path: Path, obj) -> Path:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)
    return path


def edit_lines(path: Path, edit) -> Path:
    """Replace the text lines of ``path`` by ``edit(lines)``, written with LF line ends."""
    path.write_text("".join(f"{line}\n" for line in edit(path.read_text().splitlines())))
    return path


def mnist_file(root: Path, name: str) -> Path:
    return make_mnist(root) / name


def broken_mnist_gz_truncated(root: Path) -> Path:
    path = mnist_file(root, "t10k-images-idx3-ubyte.gz")
    return truncate(path, len(path.read_bytes()) // 2)


def broken_mnist_header_cut(root: Path) -> Path:
    path = mnist_file(root, "train-images-idx3-ubyte")
    return truncate(path, 10)  # inside the second of the three sizes


def broken_mnist_longer_than_header(root: Path) -> Path:
    path = mnist_file(root, "train-labels-idx1-ubyte")
    path.write_bytes(path.read_bytes() + b"\0" * 5)
    return path


def broken_mnist_label_200(root: Path) -> Path:
    path = mnist_file(root, "train-labels-idx1-ubyte")
    return write_idx(path, np.array([0, 1, 2, 200, 4, 5, 6, 7, 8, 9, 0, 1]))


def broken_mnist_float_images(root: Path) -> Path:
    path = mnist_file(root, "train-images-idx3-ubyte")
    return write_idx(path, np.zeros((12, 28, 28)), dtype=">f4")


def broken_mnist_empty(root: Path) -> Path:
    path = mnist_file(root, "train-labels-idx1-ubyte")
    return truncate(path, 0)


def cifar_file(root: Path, name: str) -> Path:
    return make_cifar10(root) / "cifar-10-batches-py" / name


def cifar_batch(**changes) -> dict:
    """A CIFAR-10 batch of two images, with ``changes`` (a key set to ``None`` is left out)."""
    batch = {b"batch_label": b"x", b"labels": [3, 4], b"data": np.zeros((2, 3072), np.uint8),
             b"filenames": [b"a.png", b"b.png"]}
    batch.update({k.encode(): v for k, v in changes.items()})
    return {k: v for k, v in batch.items() if v is not None}


def broken_cifar_batch_without_data(root: Path) -> Path:
    return write_pickle(cifar_file(root, "data_batch_2"), cifar_batch(data=None))


def broken_cifar_meta_list(root: Path) -> Path:
    return write_pickle(cifar_file(root, "batches.meta"), [n.encode() for n in CIFAR_NAMES])


def broken_cifar_meta_without_names(root: Path) -> Path:
    return write_pickle(cifar_file(root, "batches.meta"), {b"num_vis": 3072})


def broken_cifar_rows_of_1000(root: Path) -> Path:
    return write_pickle(cifar_file(root, "data_batch_3"), cifar_batch(data=np.zeros((2, 1000), np.uint8)))


def broken_cifar_labels_to_19(root: Path) -> Path:
    return write_pickle(cifar_file(root, "test_batch"), cifar_batch(labels=[0, 19]))


def broken_cifar_label_count(root: Path) -> Path:
    return write_pickle(cifar_file(root, "data_batch_1"), cifar_batch(labels=[1, 2, 3]))


def celeba_partition(root: Path, edit) -> Path:
    return edit_lines(make_celeba(root) / "list_eval_partition.txt", edit)


def broken_celeba_unknown_name(root: Path) -> Path:
    return celeba_partition(root, lambda lines: [*lines[:2], "000003 0", *lines[3:]])


def broken_celeba_duplicate(root: Path) -> Path:
    return celeba_partition(root, lambda lines: [*lines, lines[1]])


def broken_celeba_no_training_image(root: Path) -> Path:
    return celeba_partition(root, lambda lines: [line[:-1] + "2" for line in lines])


def broken_celeba_empty(root: Path) -> Path:
    return truncate(make_celeba(root) / "list_eval_partition.txt", 0)


def broken_celeba_binary(root: Path) -> Path:
    path = make_celeba(root) / "list_eval_partition.txt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    return path


def wikiart_split(root: Path, name: str, edit) -> Path:
    return edit_lines(make_wikiart(root) / "WikiArt Dataset" / "Genre" / name, edit)


def broken_wikiart_three_columns(root: Path) -> Path:
    return wikiart_split(root, "genre_train.csv", lambda lines: [*lines, "Realism/ivan-shishkin_forest.jpg,0,1"])


def broken_wikiart_unknown_name(root: Path) -> Path:
    return wikiart_split(root, "genre_train.csv", lambda lines: [*lines, "Realism/notes.txt,1"])


def broken_wikiart_outside_root(root: Path) -> Path:
    return wikiart_split(root, "genre_val.csv", lambda lines: ["../../secret/face.jpg,0"])


def broken_wikiart_truncated_in_first_row(root: Path) -> Path:
    return wikiart_split(root, "genre_val.csv", lambda lines: [lines[0][:16]])  # 'Realism/ivan-shi'


def broken_wikiart_empty_split(root: Path) -> Path:
    return truncate(make_wikiart(root) / "WikiArt Dataset" / "Genre" / "genre_val.csv", 0)


def broken_wikiart_empty_class_file(root: Path) -> Path:
    return truncate(make_wikiart(root) / "WikiArt Dataset" / "Genre" / "genre_class", 0)


def pokemon_csv(root: Path, edit) -> Path:
    return edit_lines(make_pokemon(root) / "pokemon.csv", edit)


def broken_pokemon_four_columns(root: Path) -> Path:
    return pokemon_csv(root, lambda lines: [*lines[:3], lines[3] + ",Flying", *lines[4:]])


def broken_pokemon_truncated(root: Path) -> Path:
    return pokemon_csv(root, lambda lines: [*lines[:-1], lines[-1][:5]])  # 'psydu'


def broken_pokemon_header_only(root: Path) -> Path:
    return pokemon_csv(root, lambda lines: lines[:1])


def broken_pokemon_conflicting_rows(root: Path) -> Path:
    return pokemon_csv(root, lambda lines: [*lines, "vulpix,Ice,"])


def broken_pokemon_empty(root: Path) -> Path:
    return truncate(make_pokemon(root) / "pokemon.csv", 0)


def broken_pokemon_binary(root: Path) -> Path:
    path = make_pokemon(root) / "pokemon.csv"
    path.write_bytes(b"Name,Type1,Type2\n\xff\xfe\x00\x81,Fire,\n")
    return path
