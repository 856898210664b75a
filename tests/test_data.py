"""DataModules over every on-disk format of the studies, their cache, serving and messages."""
from __future__ import annotations

import logging
import os
import types

import pytest
import torch

from gan_lab.build import build_datamodule
from gan_lab.data import (CIFAR10, MNIST, CelebA, DeviceLoader, ImageFolder, Monet, Pokemon, WikiArt,
                          measure_throughput)
from gan_lab.data import cache as cache_module
from gan_lab.data.digits import Digits
from gan_lab.data.base import EpochSampler
from gan_lab.data.folders import POKEMON_TYPES
from gan_lab.errors import UserError
from gan_lab.run import train
from tests import datasets
from tests.conftest import refused


def ready(dm):
    dm.prepare_data()
    dm.setup("fit")
    return dm


def check_contract(dm, n_train, size, channels):
    images, labels = dm.dataset("train").images, dm.dataset("train").labels
    assert images.dtype == torch.uint8 and images.shape == (n_train, channels, size, size)
    assert labels.dtype == torch.int64 and labels.shape == (n_train,)
    x, y = next(dm.batches("train", batch_size=4))
    assert x.dtype == torch.float32 and -1.0 <= x.min() and x.max() <= 1.0
    assert dm.channels == channels and len(dm.class_names) == dm.num_classes


def test_mnist_idx_plain_and_gzip(tmp_path):
    dm = ready(MNIST(root=datasets.make_mnist(tmp_path / "mnist"), image_size=32, batch_size=4))
    check_contract(dm, 12, 32, 1)
    train, val = dm.dataset("train"), dm.dataset("val")
    assert train.labels.tolist() == [i % 10 for i in range(12)] and len(val) == 4  # t10k .gz
    # constant images keep their value through the resize: label 3 -> 60
    assert train.images[3].float().mean().round() == 60
    assert dm.class_names == [str(i) for i in range(10)]


@pytest.mark.parametrize("layout, where", [
    ("kaggle", "train-images.idx3-ubyte"),             # the Kaggle copy's dotted names
    ("torchvision", "MNIST/raw/train-images-idx3-ubyte"),  # torchvision's download folder
])
def test_mnist_kaggle_names_and_torchvision_folder(tmp_path, layout, where):
    root = datasets.make_mnist(tmp_path / "mnist", layout=layout)
    dm = ready(MNIST(root=root, image_size=32, batch_size=4))
    check_contract(dm, 12, 32, 1)
    train, val = dm.dataset("train"), dm.dataset("val")
    assert train.labels.tolist() == [i % 10 for i in range(12)] and val.labels.tolist() == [0, 1, 2, 3]
    assert train.images[7].float().mean().round() == 140 and val.images[2].float().mean().round() == 40
    assert [str(p.relative_to(root)) for p in dm.source_files("train")][0] == where


def test_mnist_missing_files_name_every_place_looked_in(tmp_path):
    root = tmp_path / "mnist"
    (root / "MNIST" / "raw").mkdir(parents=True)
    with pytest.raises(UserError) as info:
        ready(MNIST(root=root, batch_size=1))
    message = str(info.value)
    for place in (root, root / "MNIST" / "raw", root / "raw"):
        assert f"{place.absolute()}," in message or f"{place.absolute()};" in message, place
    assert all(s in message for s in ("train-images-idx3-ubyte", "train-images.idx3-ubyte", ".gz")), message
    assert "yann.lecun.com" in message and "hojjatk/mnist-dataset" in message and "data.root" in message
    assert "\n" not in message and message.count(". ") == 0
    # the training files alone: the test files are named
    datasets.make_mnist(root / "MNIST" / "raw")
    for path in (root / "MNIST" / "raw").glob("t10k-*"):
        path.unlink()
    with refused("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte", "data.root"):
        ready(MNIST(root=root, batch_size=1))


def test_mnist_rejects_a_file_that_is_not_idx(tmp_path):
    root = datasets.make_mnist(tmp_path / "mnist")
    (root / "train-images-idx3-ubyte").write_bytes(b"<html>not found</html>")
    with refused("train-images-idx3-ubyte", "IDX", "re-download"):
        ready(MNIST(root=root, batch_size=4))


def test_cifar10_pickles_with_class_names(tmp_path):
    dm = ready(CIFAR10(root=datasets.make_cifar10(tmp_path / "cifar10"), image_size=64, batch_size=4))
    check_contract(dm, 10, 64, 3)
    assert dm.class_names == datasets.CIFAR_NAMES and dm.num_classes == 10
    assert dm.dataset("train").labels.tolist() == list(range(10)) and len(dm.dataset("val")) == 2
    assert dm.info["train"].files[0] == "data_batch_1[0]"


def test_celeba_partition_and_centre_crop(tmp_path):
    root = datasets.make_celeba(tmp_path / "celeba")
    dm = ready(CelebA(root=root, image_size=8, batch_size=2))
    check_contract(dm, 4, 8, 3)
    assert len(dm.dataset("val")) == 1 and dm.num_classes == 1
    assert len(dm.dataset("test")) == 1  # partition 2, served for evaluation
    with refused("celeba", "'dev'", "train, val, test"):
        dm.dataset("dev")
    assert dm.dataset("train").labels.eq(0).all()
    # the centred 18x18 square is the white band: no black row survives the crop
    assert dm.dataset("train").images.float().mean() > 240
    squashed = ready(CelebA(root=root, image_size=8, batch_size=2, crop="none", cache_dir=tmp_path / "c2"))
    assert squashed.dataset("train").images.float().mean() < 240  # the black bands are kept
    assert dm.info["train"].source_sizes[0].tolist() == [18, 22]


def test_wikiart_genre_reads_the_quirks_and_reports_bad_files(tmp_path, caplog):
    root = datasets.make_wikiart(tmp_path / "wikiart")
    with caplog.at_level(logging.WARNING, logger="gan_lab"):
        dm = ready(WikiArt(root=root, task="genre", image_size=16, batch_size=2))
    assert dm.class_names == ["landscape", "portrait", "still_life"] and dm.num_classes == 3
    check_contract(dm, 3, 16, 3)
    info = dm.info["train"]
    assert info.files == ["wikiart/Impressionism/claude-monet_water-lilies.jpg",
                          "wikiart/Art_Nouveau_Modern/gustav-klimt_garbage-dump-1883(1).jpg",
                          "wikiart/Impressionism/claude-monet_poplars.jpg"]
    assert dm.dataset("train").labels.tolist() == [0, 2, 0]
    report = dm.cache_folder / "wikiart_genre-train-skipped.txt"
    lines = report.read_text().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("wikiart/Realism/does-not-exist.jpg: missing")
    assert lines[1].startswith("wikiart/Realism/vincent-van-gogh_corrupt.jpg: unreadable")
    assert "skipped 2 files, missing, unreadable or unlabelled" in caplog.text and str(report) in caplog.text
    assert not (dm.cache_folder / "wikiart_genre-val-skipped.txt").exists()


def test_wikiart_style_class_names_differ_from_folders(tmp_path):
    dm = ready(WikiArt(root=datasets.make_wikiart(tmp_path / "w"), task="style", image_size=8, batch_size=1))
    assert dm.class_names == ["Art_Nouveau", "Impressionism", "Realism"]
    assert dm.info["train"].files[0].endswith("Art_Nouveau_Modern/gustav-klimt_garbage-dump-1883(1).jpg")
    assert dm.dataset("train").labels.tolist() == [0, 1]
    # a yellow painting served in its colour: R and G high, B low
    r, g, b = dm.dataset("train").images[0].float().mean((1, 2)).tolist()
    assert r > 180 and g > 160 and b < 90


def test_wikiart_artist_header_empty_column_and_no_extensions(tmp_path):
    root = datasets.make_wikiart(tmp_path / "w")
    dm = ready(WikiArt(root=root, task="artist", image_size=8, batch_size=1))
    assert dm.class_names == ["claude_monet", "gustav_klimt", "ivan_shishkin"]
    assert dm.dataset("train").labels.tolist() == [0, 1] and dm.dataset("val").labels.tolist() == [2]
    # the same split file given with an extension is found too
    (root / "WikiArt Dataset" / "Artist" / "artist_val").rename(root / "WikiArt Dataset" / "Artist" / "artist_val.csv")
    dm2 = ready(WikiArt(root=root, task="artist", image_size=8, batch_size=1))
    assert dm2.dataset("val").labels.tolist() == [2]


def test_wikiart_bad_class_index_is_one_sentence(tmp_path):
    root = datasets.make_wikiart(tmp_path / "w")
    (root / "WikiArt Dataset" / "Genre" / "genre_val.csv").write_text("Realism/ivan-shishkin_forest.jpg,7\n")
    with refused("genre_val.csv line 1", "class 7", "0..2"):
        ready(WikiArt(root=root, task="genre", image_size=8, batch_size=1))


def test_pokemon_alpha_on_white_types_and_subset(tmp_path):
    root = datasets.make_pokemon(tmp_path / "pokemon")
    dm = ready(Pokemon(root=root, image_size=12, batch_size=2))
    check_contract(dm, 5, 12, 3)
    images = dm.dataset("train").images
    assert images[:, :, 0, 0].eq(255).all()  # transparent corner -> white, not black
    assert images[:, 0, 6, 6].eq(255).all() and images[:, 1, 6, 6].lt(30).all()  # red centre
    assert dm.class_names == POKEMON_TYPES and dm.num_classes == 18
    by_name = dict(zip(dm.info["train"].files, dm.dataset("train").labels.tolist()))
    assert by_name["images/charmander.png"] == POKEMON_TYPES.index("Fire")
    assert by_name["images/bulbasaur.png"] == POKEMON_TYPES.index("Grass")
    assert dm.info["train"].skipped == ["images/mew.png: no row in pokemon.csv"]

    subset = ready(Pokemon(root=root, image_size=12, batch_size=2, types=["Fire", "water"]))
    assert subset.class_names == ["Fire", "Water"] and subset.num_classes == 2
    names = dict(zip(subset.info["train"].files, subset.dataset("train").labels.tolist()))
    assert names == {"images/charmander.png": 0, "images/vulpix.png": 0, "images/psyduck.png": 1,
                     "images/squirtle.png": 1}
    with refused("data.types", "'Fyre'", "Fighting, Fire"):
        ready(Pokemon(root=root, image_size=12, batch_size=2, types=["Fyre"]))


def test_pokemon_without_csv_is_unlabelled(tmp_path):
    root = datasets.make_pokemon(tmp_path / "pokemon", with_csv=False)
    dm = ready(Pokemon(root=root, image_size=8, batch_size=2))
    assert len(dm.dataset("train")) == 6 and dm.num_classes == 1
    with refused("data.types=['Fire']", "Name,Type1,Type2"):
        ready(Pokemon(root=root, image_size=8, batch_size=2, types=["Fire"]))


def test_monet_flat_folder_and_image_folder_classes(tmp_path):
    monet = ready(Monet(root=datasets.make_monet(tmp_path / "monet"), image_size=8, batch_size=2,
                        val_fraction=0.2))
    assert len(monet.dataset("train")) == 4 and len(monet.dataset("val")) == 1 and monet.num_classes == 1
    folder = ready(ImageFolder(root=datasets.make_image_folder(tmp_path / "pets"), image_size=8, batch_size=2))
    check_contract(folder, 6, 8, 3)
    assert folder.class_names == ["cats", "dogs"]
    labels, images = folder.dataset("train").labels, folder.dataset("train").images.float()
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert (images[labels == 0, 0].mean() > 200) and (images[labels == 1, 2].mean() > 200)
    grey = ready(ImageFolder(root=tmp_path / "pets", image_size=8, batch_size=2, channels=1, cache_dir=tmp_path / "g"))
    assert grey.dataset("train").images.shape == (6, 1, 8, 8)


def test_images_the_folder_layout_leaves_out_are_reported(tmp_path, caplog):
    """Class folders hold their images directly: images one level deeper (a class whose images sit in
    sub-folders) are not read, and the log says how many and where, not nothing."""
    root = datasets.make_image_folder(tmp_path / "pets")
    for i in range(2):
        datasets.save_jpg(root / "birds" / "2019" / f"{i}.jpg", (20, 16), (10, 250, 10))
    datasets.save_jpg(root / ".thumbs" / "t.jpg", (20, 16), (10, 250, 10))  # hidden: not the user's data
    with caplog.at_level(logging.WARNING, logger="gan_lab"):
        folder = ready(ImageFolder(root=root, image_size=8, batch_size=2))
    assert folder.class_names == ["cats", "dogs"] and len(folder.dataset("train")) == 6
    assert "image_folder: 2 image files under" in caplog.text and "are not read, such as birds/2019/0.jpg" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gan_lab"):
        ready(ImageFolder(root=datasets.make_image_folder(tmp_path / "clean"), image_size=8, batch_size=2))
    assert "not read" not in caplog.text


def test_sixteen_bit_grey_is_scaled_to_eight_bits_not_clipped(tmp_path):
    import numpy as np
    from PIL import Image

    values = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1040  # 0 .. 65520
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)  # a 16-bit greyscale PNG
    assert Image.open(path).mode.startswith("I")
    expected = np.rint(values / 257.0).astype(np.uint8)
    for channels in (1, 3):
        decoded, size = cache_module.decode_image(path, 8, channels, crop="none")
        assert size == (8, 8) and decoded.shape == (channels, 8, 8)
        assert np.abs(decoded.astype(int) - expected.astype(int)).max() <= 1
        assert (decoded == 255).mean() < 0.05  # not the almost white of a clip at 255


def test_a_colour_a_png_marks_transparent_takes_the_background(tmp_path):
    import numpy as np
    from PIL import Image

    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:, 4:] = (200, 30, 30)
    path = tmp_path / "keyed.png"
    Image.fromarray(rgb).save(path, transparency=(0, 0, 0))  # black is transparent (a tRNS chunk)
    decoded, _ = cache_module.decode_image(path, 8, 3, crop="none", background=(255, 255, 255))
    assert (decoded[:, :, :3] == 255).all()  # the transparent half: white
    assert (decoded[:, :, 5:].transpose(1, 2, 0) == (200, 30, 30)).all()


def test_reduced_jpeg_decoding_keeps_the_crop_box(tmp_path):
    """A CelebA-sized JPEG (178 x 218) at 32 px decodes at a quarter scale (45 x 55, rounded up): the
    crop must scale by 1/4, not by 45/178, or the image is squeezed by half a reduced pixel."""
    import numpy as np
    from PIL import Image

    ramp = np.tile(np.linspace(0, 255, 178), (218, 1)).astype(np.uint8)
    path = tmp_path / "ramp.jpg"
    Image.fromarray(np.stack([ramp] * 3, -1)).save(path, quality=100)
    decoded, _ = cache_module.decode_image(path, 32, 3)
    full = Image.open(path).convert("RGB")  # decoded at full scale, centre square cropped by hand
    reference = np.asarray(full.resize((32, 32), Image.Resampling.BICUBIC, box=(0, 20, 178, 198))).transpose(2, 0, 1)
    assert np.abs(decoded.astype(int) - reference.astype(int)).max() <= 1


def test_a_batch_larger_than_each_processs_share_is_refused(tmp_path):
    """Under DDP each process gets n // world_size of the images: a batch that fits n but not that share
    would serve no batch on any process."""
    dm = Digits(image_size=8, batch_size=1000)
    dm.trainer = types.SimpleNamespace(world_size=2)  # the one fact setup reads from the trainer
    with refused("data.batch_size=1000", "2 processes", "data.batch_size<=808"):
        dm.setup("fit")
    one = Digits(image_size=8, batch_size=1000)
    one.setup("fit")  # 1,617 images on one process: fits


def test_cache_is_reused_and_rebuilt_when_sources_change(tmp_path, monkeypatch):
    root = datasets.make_monet(tmp_path / "monet")
    first = ready(Monet(root=root, image_size=8, batch_size=2))
    caches = list(first.cache_folder.glob("monet-train-8-*.pt"))
    assert len(caches) == 1

    calls = []
    real = cache_module.decode_image
    monkeypatch.setattr(cache_module, "decode_image", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    again = ready(Monet(root=root, image_size=8, batch_size=2))
    assert calls == [] and torch.equal(again.dataset("train").images, first.dataset("train").images)

    # another size is another cache, beside the first
    ready(Monet(root=root, image_size=4, batch_size=2))
    assert len(calls) == 5 and len(list(first.cache_folder.glob("monet-train-*.pt"))) == 2

    # a changed file (size and time) rebuilds, and replaces the stale cache of that size
    calls.clear()
    datasets.save_jpg(root / "monet_jpg" / f"{0:010x}.jpg", (24, 24), (255, 255, 0))
    os.utime(root / "monet_jpg" / f"{0:010x}.jpg", ns=(1, 1))
    changed = ready(Monet(root=root, image_size=8, batch_size=2))
    assert len(calls) == 5 and not caches[0].exists()
    assert not torch.equal(changed.dataset("train").images, first.dataset("train").images)

    # a new file and a new crop rebuild too
    calls.clear()
    datasets.save_jpg(root / "monet_jpg" / "extra.jpg", (24, 24))
    assert len(ready(Monet(root=root, image_size=8, batch_size=2)).dataset("train")) == 6
    ready(Monet(root=root, image_size=8, batch_size=2, crop=10))
    assert len(calls) == 12
    assert not list(first.cache_folder.glob("*.tmp"))  # atomic writes leave no temporary file


def test_damaged_cache_is_rebuilt(tmp_path):
    root = datasets.make_monet(tmp_path / "monet", n=3)
    dm = ready(Monet(root=root, image_size=8, batch_size=1))
    (path,) = dm.cache_folder.glob("monet-train-8-*.pt")
    path.write_bytes(b"truncated")
    again = ready(Monet(root=root, image_size=8, batch_size=1))
    assert torch.equal(again.dataset("train").images, dm.dataset("train").images)


def test_cache_falls_back_to_the_user_cache_when_root_is_not_writable(tmp_path, monkeypatch):
    root = datasets.make_monet(tmp_path / "monet", n=2)
    (root / ".gan_lab_cache").write_text("a file where the cache folder would go")  # mkdir fails
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user"))
    dm = ready(Monet(root=root, image_size=8, batch_size=1))
    assert dm.cache_folder.parent == tmp_path / "user" / "gan_lab" / "monet"   # one folder per data root
    assert list(dm.cache_folder.glob("monet-train-8-*.pt"))
    other = datasets.make_monet(tmp_path / "other" / "monet", n=2)
    (other / ".gan_lab_cache").write_text("read-only too")
    second = ready(Monet(root=other, image_size=8, batch_size=1))
    assert second.cache_folder.parent == dm.cache_folder.parent and second.cache_folder != dm.cache_folder
    assert list(dm.cache_folder.glob("monet-train-8-*.pt"))           # the first root's cache survives


@pytest.mark.parametrize("cls, needle, source", [
    (MNIST, "train-images-idx3-ubyte", "yann.lecun.com"),
    (CIFAR10, "cifar-10-batches-py", "cs.toronto.edu/~kriz"),
    (CelebA, "img_align_celeba", "mmlab.ie.cuhk.edu.hk"),
    (WikiArt, "genre_train.csv", "github.com/cs-chan/ArtGAN"),
    (Monet, "monet_jpg", "gan-getting-started"),
    (Pokemon, "pokemon.csv", "kvpratama/pokemon-images-dataset"),
    (ImageFolder, "one sub-folder of images per class", "data.root"),
])
def test_missing_data_is_one_sentence_with_path_layout_and_source(tmp_path, cls, needle, source):
    root = tmp_path / "absent"
    with pytest.raises(UserError) as info:
        ready(cls(root=str(root), batch_size=1))
    message = str(info.value)
    assert str(root) in message and needle in message and source in message
    assert "\n" not in message and message.count(". ") == 0


def test_a_split_with_no_readable_file_is_one_sentence(tmp_path):
    root = tmp_path / "broken"
    (root / "monet_jpg").mkdir(parents=True)
    (root / "monet_jpg" / "a.jpg").write_bytes(b"not an image")
    with refused("monet-train-skipped.txt", "data.root="):
        ready(Monet(root=root, batch_size=1))


def test_missing_file_inside_an_existing_root_names_it(tmp_path):
    root = datasets.make_celeba(tmp_path / "celeba")
    (root / "list_eval_partition.txt").unlink()
    with refused("list_eval_partition.txt", "data.root="):
        ready(CelebA(root=root, batch_size=1))


def test_device_loader_serves_the_epoch_sampler_order(tmp_path):
    dm = ready(ImageFolder(root=datasets.make_image_folder(tmp_path / "pets"), image_size=4, batch_size=2,
                           on_device=True, seed=3))
    loader = dm.train_dataloader()
    assert isinstance(loader, DeviceLoader) and len(loader) == 3
    reference = ready(ImageFolder(root=tmp_path / "pets", image_size=4, batch_size=2, on_device=False, seed=3))
    plain = reference.train_dataloader()
    assert not isinstance(plain, DeviceLoader)
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)
        plain.sampler.set_epoch(epoch)
        for (a, la), (b, lb) in zip(loader, plain, strict=True):
            assert torch.equal(a, b) and torch.equal(la, lb)
    orders = []
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)
        orders.append(torch.cat([y for _, y in loader]).tolist())
    assert orders[0] != orders[1] and sorted(orders[0]) == sorted(orders[1])  # a new order per epoch
    # two ranks split an epoch between them, without overlap
    halves = [DeviceLoader(dm.dataset("train"), 1, "cpu", EpochSampler(6, 3, rank=r, world_size=2)) for r in (0, 1)]
    seen = [i for h in halves for _, y in h for i in y.tolist()]
    assert len(seen) == 6 and len(halves[0]) == 3
    with pytest.raises(UserError, match="on_device"):
        ImageFolder(root=tmp_path / "pets", on_device="sometimes")


def test_ranks_take_disjoint_equal_shares_and_skip_within_their_own(tmp_path):
    order = list(EpochSampler(7, seed=5))
    shares = [EpochSampler(7, seed=5, rank=r, world_size=2) for r in (0, 1)]
    assert [list(s) for s in shares] == [order[0:6:2], order[1:6:2]] and len(shares[1]) == 3
    shares[1].skip_next(2)
    assert list(shares[1]) == [order[5]] and list(shares[1]) == order[1:6:2]  # the skip is used once
    # under DDP the DataModule hands the trainer its rank's share; Lightning must not shard it again
    dm = ready(ImageFolder(root=datasets.make_image_folder(tmp_path / "pets"), image_size=4, batch_size=1,
                           on_device=True, seed=5))
    dm.trainer = types.SimpleNamespace(world_size=2, global_rank=1,
                                       strategy=types.SimpleNamespace(root_device=torch.device("cpu")))
    loader = dm.train_dataloader()
    assert isinstance(loader, DeviceLoader) and len(loader) == 3
    expected = dm.dataset().images[list(EpochSampler(6, 5))[1::2]]  # 6 images: positions 1, 3, 5
    assert torch.equal(torch.cat([x for x, _ in loader]), expected)


def test_lightning_sharding_the_shards_again_is_refused_before_training(make_cfg):
    from gan_lab.build import build_trainer

    with pytest.raises(UserError, match="trainer.use_distributed_sampler=false"):
        build_trainer(make_cfg("trainer.use_distributed_sampler=true"), [], [])


def test_measure_throughput_reports_images_per_second(tmp_path):
    dm = ready(Monet(root=datasets.make_monet(tmp_path / "monet", n=4), image_size=8, batch_size=2))
    result = measure_throughput(dm, seconds=0.05)
    assert result["images"] > 0 and result["images_per_s"] > 0 and result["image_shape"] == (3, 8, 8)


def test_debug_training_run_on_a_synthetic_dataset(make_cfg, tmp_path):
    root = datasets.make_pokemon(tmp_path / "pokemon")
    cfg = make_cfg("data=pokemon", f"data.root={root}", "data.image_size=16", "data.batch_size=2",
                   "data.on_device=true", "augment=pokemon", "model.generator.width=8",
                   "model.discriminator.width=8")
    train(cfg)
    assert cfg.data.num_classes == 18 and cfg.data.class_names[0] == "Bug"
    assert (tmp_path / "run" / "samples" / "final.png").is_file()
    assert (tmp_path / "run" / "metrics.json").is_file()


@pytest.mark.parametrize("name, make, n_train, num_classes", [
    ("mnist", datasets.make_mnist, 12, 10),
    ("cifar10", datasets.make_cifar10, 10, 10),
    ("celeba", datasets.make_celeba, 4, 1),
    ("wikiart_genre", datasets.make_wikiart, 3, 3),
    ("wikiart_style", datasets.make_wikiart, 2, 3),
    ("wikiart_artist", datasets.make_wikiart, 2, 3),
    ("monet", datasets.make_monet, 5, 1),
    ("pokemon", datasets.make_pokemon, 5, 18),
    ("image_folder", datasets.make_image_folder, 6, 2),
])
def test_every_data_config_builds_and_publishes_its_facts(make_cfg, tmp_path, name, make, n_train, num_classes):
    root = make(tmp_path / name)
    cfg = make_cfg(f"data={name}", f"data.root={root}", "data.image_size=8", "data.batch_size=1")
    dm = build_datamodule(cfg)
    assert len(dm.dataset("train")) == n_train and dm.image_size == 8
    assert cfg.data.num_classes == num_classes and len(cfg.data.class_names) == num_classes
    assert cfg.data.channels == (1 if name == "mnist" else 3)
    assert dm.cache_folder == root / ".gan_lab_cache" and dm.augment is not None and not dm.augment.enabled
