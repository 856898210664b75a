"""Damaged copies of every dataset format, and of the caches: one sentence naming the file, or a rebuild."""
from __future__ import annotations

import logging
import os
import signal
import time

import pytest
import torch

from gan_lab.data import CIFAR10, MNIST, CelebA, Monet, Pokemon, WikiArt
from gan_lab.data import cache as cache_module
from gan_lab.errors import SetupInterrupted, TrainingInterrupted, UserError, exit_on_user_error
from gan_lab.fs import HOST_TAG, TEMP_NAME, atomic_write
from gan_lab.metrics.features import load_extractor
from tests import datasets
from tests.conftest import refused

MODULES = {
    "mnist": lambda root: MNIST(root=root, image_size=8, batch_size=2),
    "cifar10": lambda root: CIFAR10(root=root, image_size=8, batch_size=2),
    "celeba": lambda root: CelebA(root=root, image_size=8, batch_size=1),
    "wikiart": lambda root: WikiArt(root=root, task="genre", image_size=8, batch_size=1),
    "pokemon": lambda root: Pokemon(root=root, image_size=8, batch_size=1),
}


def prepare(dm):
    """What the entry points do before training (``build_datamodule``, then ``setup_datamodule``)."""
    dm.prepare_data()
    dm.check()
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("dataset, broken, key", [
    ("mnist", datasets.broken_mnist_gz_truncated, "EOFError"),
    ("mnist", datasets.broken_mnist_header_cut, "truncated inside its header"),
    ("mnist", datasets.broken_mnist_longer_than_header, "longer than its header"),
    ("mnist", datasets.broken_mnist_label_200, "label 200"),
    ("mnist", datasets.broken_mnist_float_images, "float32"),
    ("mnist", datasets.broken_mnist_empty, "empty"),
    ("cifar10", datasets.broken_cifar_batch_without_data, "no data key"),
    ("cifar10", datasets.broken_cifar_meta_list, "holds a list"),
    ("cifar10", datasets.broken_cifar_meta_without_names, "no label_names"),
    ("cifar10", datasets.broken_cifar_rows_of_1000, "(2, 1000)"),
    ("cifar10", datasets.broken_cifar_labels_to_19, "label 19"),
    ("cifar10", datasets.broken_cifar_label_count, "list of 3 for 2 rows"),
    ("celeba", datasets.broken_celeba_unknown_name, "'000003'"),
    ("celeba", datasets.broken_celeba_duplicate, "000002.jpg again"),
    ("celeba", datasets.broken_celeba_no_training_image, "no training image"),
    ("celeba", datasets.broken_celeba_empty, "is empty"),
    ("celeba", datasets.broken_celeba_binary, "not UTF-8"),
    ("wikiart", datasets.broken_wikiart_three_columns, "'Realism/ivan-shishkin_forest.jpg,0'"),
    ("wikiart", datasets.broken_wikiart_unknown_name, "'Realism/notes.txt'"),
    ("wikiart", datasets.broken_wikiart_outside_root, "'../../secret/face.jpg'"),
    ("wikiart", datasets.broken_wikiart_truncated_in_first_row, "lists no image"),
    ("wikiart", datasets.broken_wikiart_empty_split, "lists no image"),
    ("wikiart", datasets.broken_wikiart_empty_class_file, "is empty"),
    ("pokemon", datasets.broken_pokemon_four_columns, "line 4 has 4 columns"),
    ("pokemon", datasets.broken_pokemon_truncated, "line 6 has 1 column,"),
    ("pokemon", datasets.broken_pokemon_header_only, "no row below its header"),
    ("pokemon", datasets.broken_pokemon_conflicting_rows, "vulpix the type Ice"),
    ("pokemon", datasets.broken_pokemon_empty, "is empty"),
    ("pokemon", datasets.broken_pokemon_binary, "not UTF-8"),
], ids=lambda v: v.__name__.removeprefix("broken_") if callable(v) else None)
def test_a_damaged_file_is_one_line_naming_it_before_training(tmp_path, capsys, dataset, broken, key):
    path = broken(tmp_path / dataset)
    with pytest.raises(SystemExit) as info:
        exit_on_user_error(prepare, MODULES[dataset](tmp_path / dataset))
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and err.startswith("gan_lab: error: "), err
    assert str(path) in err and key in err, err


def test_labels_outside_the_classes_stop_a_conditional_run_before_training(make_cfg, tmp_path):
    from gan_lab.run import train

    path = datasets.broken_mnist_label_200(tmp_path / "mnist")
    cfg = make_cfg("data=mnist", f"data.root={tmp_path / 'mnist'}", "data.image_size=8", "data.batch_size=2",
                   "model=cgan_mlp", "model.generator.hidden=[16]", "model.discriminator.hidden=[16]")
    with pytest.raises(UserError, match="label 200") as info:
        train(cfg)
    assert str(path) in str(info.value) and not (tmp_path / "run" / "metrics.json").exists()


def mnist_cache(tmp_path):
    dm = prepare(MODULES["mnist"](datasets.make_mnist(tmp_path / "mnist")))
    (path,) = dm.cache_folder.glob("mnist-train-8-*.pt")
    return dm, path


@pytest.mark.parametrize("change, found", [
    (lambda d: {**d, "images": d["images"][:, :, :4, :4]}, "not 12x[1, 8, 8]"),
    (lambda d: {**d, "images": d["images"].float()}, "float32"),
    (lambda d: {**d, "labels": d["labels"][:5]}, "int64 [5]"),
], ids=["size", "dtype", "labels"])
def test_a_cache_of_another_structure_is_rebuilt_with_a_warning(tmp_path, caplog, change, found):
    dm, path = mnist_cache(tmp_path)
    torch.save(change(torch.load(path, weights_only=True)), path)
    with caplog.at_level(logging.WARNING, logger="gan_lab"):
        again = prepare(MODULES["mnist"](tmp_path / "mnist"))
    assert f"cache {path} is damaged" in caplog.text and found in caplog.text, caplog.text
    assert torch.equal(again.dataset("train").images, dm.dataset("train").images)
    assert cache_module.load_cache(path, 1, 8) is not None  # written anew


def test_a_cache_with_labels_outside_the_classes_is_refused(tmp_path):
    dm, path = mnist_cache(tmp_path)
    data = torch.load(path, weights_only=True)
    data["labels"][3] = 200
    torch.save(data, path)
    with refused("mnist/train", "image 3", "label 200", "0..9", "data.root="):
        prepare(MODULES["mnist"](tmp_path / "mnist"))


def killed_writer(target):
    """A process killed (SIGKILL) inside ``atomic_write(target)``: the temporary file it leaves."""
    before = set(target.parent.iterdir())
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child dies inside the write
        atomic_write(target, lambda fh: (fh.write(b"x" * 4096), fh.flush(), os.kill(os.getpid(), signal.SIGKILL)))
        os._exit(0)
    os.waitpid(pid, 0)
    (orphan,) = set(target.parent.iterdir()) - before
    return orphan


def test_temporary_files_of_a_killed_cache_writer_are_removed_on_the_next_start(tmp_path):
    dm, path = mnist_cache(tmp_path)
    folder = dm.cache_folder
    orphans = [killed_writer(path), killed_writer(folder / "mnist-train-skipped.txt")]
    writing = folder / f".{path.name}.{HOST_TAG}-{os.getpid()}.abcdefgh.tmp"  # a live writer (this process)
    elsewhere = folder / f".{path.name}.0badf00d-1.abcdefgh.tmp"  # another machine's, being written
    stale = folder / f".{path.name}.0badf00d-2.abcdefgh.tmp"      # another machine's, untouched for days
    dead = TEMP_NAME.match(orphans[0].name)["pid"]
    others = [folder / f".metrics.json.{HOST_TAG}-{dead}.abcdefgh.tmp", folder / "notes.tmp"]  # not the cache's
    for extra in (writing, elsewhere, stale, *others):
        extra.write_bytes(b"x")
    os.utime(stale, (time.time() - 3 * 86400,) * 2)
    prepare(MODULES["mnist"](tmp_path / "mnist"))
    assert not any(p.exists() for p in (*orphans, stale))
    assert all(p.exists() for p in (writing, elsewhere, *others)) and path.is_file()


def prepare_until_ctrl_c(dm):
    try:
        prepare(dm)
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C left the preparation as a KeyboardInterrupt: a traceback at the entry points")


def test_ctrl_c_while_decoding_stops_at_once_and_is_one_line(tmp_path, capsys, monkeypatch):
    root = datasets.make_monet(tmp_path / "monet", n=40)
    decoded = []
    real_decode, real_tqdm = cache_module.decode_image, cache_module.tqdm

    def slow_decode(*args, **kwargs):
        decoded.append(args[0])
        time.sleep(0.02)
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(cache_module, "decode_image", slow_decode)

    def interrupted(iterable, **kwargs):  # Ctrl-C in the main thread after two images
        for i, item in enumerate(real_tqdm(iterable, **kwargs)):
            if i == 2:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(cache_module, "tqdm", interrupted)
    dm = Monet(root=root, image_size=8, batch_size=1, decode_workers=1)
    with pytest.raises(SetupInterrupted) as info:
        prepare_until_ctrl_c(dm)
    assert isinstance(info.value, TrainingInterrupted) and info.value.signum == signal.SIGINT  # gan_lab.run: exit 130
    assert "monet/train" in str(info.value) and len(decoded) < 20  # the queued files were not decoded
    assert not [p for p in dm.cache_folder.iterdir() if p.suffix in (".pt", ".tmp")]
    with pytest.raises(SystemExit) as exit_info:  # evaluate, generate, explore, fetch
        exit_on_user_error(prepare, Monet(root=root, image_size=8, batch_size=1, decode_workers=1))
    err = capsys.readouterr().err
    assert exit_info.value.code == 130 and err.count("\n") == 1 and "while decoding monet/train" in err


@pytest.mark.parametrize("damage, found", [
    (lambda p: datasets.flip_bytes(p, p.stat().st_size // 2, 2048), "fails its CRC-32 check"),
    (lambda p: datasets.truncate(p, p.stat().st_size // 2), "cannot be loaded"),
    (lambda p: torch.save({"state_dict": {}}, p), "not the keys"),
    (lambda p: datasets.truncate(p, 0), "cannot be loaded"),
], ids=["flipped", "truncated", "keys", "empty"])
def test_a_damaged_feature_extractor_cache_is_trained_again_with_a_warning(tmp_path, caplog, damage, found):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.arange(40) % 10
    args = dict(dataset="digits", train=(images, labels), val=(images[:10], labels[:10]), num_classes=10,
                cache_dir=tmp_path, kind="domain", input_size=8, steps=2)
    first = load_extractor(**args)
    (path,) = tmp_path.glob("*.pt")
    orphan = killed_writer(path)
    damage(path)
    with caplog.at_level(logging.WARNING):
        again = load_extractor(**args)
    assert f"feature extractor cache {path} is damaged" in caplog.text and found in caplog.text, caplog.text
    assert caplog.text.count("\n") == 1 and again.checksum == first.checksum
    assert load_extractor(**args).checksum == first.checksum and not orphan.exists()
