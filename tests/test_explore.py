"""``python -m gan_lab.explore``: statistics, histograms and lists written for a dataset."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict
from PIL import Image

from gan_lab.explore import channel_stats, explore
from tests import datasets
from tests.conftest import CONF, run_cli


def explore_config(run_dir, *overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="explore", overrides=list(overrides))
    with open_dict(cfg):
        cfg.run_dir, cfg.run_name = str(run_dir), "test"
    return cfg


def test_channel_stats_are_per_pixel_over_the_dataset():
    images = torch.tensor([0, 100, 200], dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 2, 2, 2).clone()
    images[:, 1] = 50
    stats = channel_stats(images, chunk=2)
    assert stats["mean"][0].eq(100).all() and stats["min"][0].eq(0).all() and stats["max"][0].eq(200).all()
    assert torch.allclose(stats["std"][0], torch.full((2, 2), (20000 / 3) ** 0.5))
    assert stats["std"][1].eq(0).all() and stats["mean"][1].eq(50).all()
    assert torch.allclose(stats["variance"][0], torch.full((2, 2), 20000 / 3)) and stats["variance"][1].eq(0).all()


def test_explore_writes_variance_and_rgb_composites_of_known_images(tmp_path):
    # two constant PNGs (lossless): red 0 | 100, green 40 | 60, blue 200 | 200
    root = tmp_path / "flat"
    root.mkdir()
    for i, colour in enumerate([(0, 40, 200), (100, 60, 200)]):
        Image.new("RGB", (8, 8), colour).save(root / f"{i}.png")
    out = tmp_path / "explore"
    explore(explore_config(out, "data=image_folder", f"data.root={root}", "data.image_size=8",
                           "data.batch_size=1"))
    expected = {
        "mean": (50, 50, 200), "min": (0, 40, 200), "max": (100, 60, 200),
        "std": (255, 51, 0),        # (50, 10, 0) scaled by 255 / 50
        "variance": (255, 10, 0),   # (2500, 100, 0) scaled by 255 / 2500: 10.2 rounds to 10
    }
    for name, colour in expected.items():
        image = Image.open(out / f"composite_{name}.png")
        assert image.mode == "RGB" and image.size == (8, 8), name
        assert (np.asarray(image) == np.array(colour, dtype=np.uint8)).all(), (name, np.asarray(image)[0, 0])
    # the figure gains a variance row and an RGB column: 5 rows of 4 panels instead of 4 rows of 3
    assert Image.open(out / "channel_stats.png").size == (int(100 * (2.6 * 4 + 0.6)), int(100 * 2.4 * 5))


def test_explore_writes_every_view_of_a_labelled_dataset(tmp_path):
    root = datasets.make_wikiart(tmp_path / "wikiart")
    out = tmp_path / "explore"
    summary = explore(explore_config(out, "data=wikiart_genre", f"data.root={root}", "data.image_size=8",
                                     "data.batch_size=1"))
    for name in ("channel_stats.png", "file_sizes.png", "image_sizes.png", "class_counts.png", "samples.png"):
        assert Image.open(out / name).size[0] > 50, name
    unreadable = (out / "unreadable.txt").read_text().splitlines()
    assert len(unreadable) == 2 and "vincent-van-gogh_corrupt.jpg: unreadable" in unreadable[1]
    assert summary["images"] == 3 and summary["unreadable"] == 2
    assert summary["class_counts"] == {"landscape": 2, "portrait": 0, "still_life": 1}
    assert summary["source_sizes"] == {"30x40": 1, "32x32": 1, "40x30": 1}
    assert json.loads((out / "summary.json").read_text())["dataset"] == "wikiart_genre"


@pytest.mark.slow  # two subprocesses of the real entry point
def test_explore_command_on_monet(tmp_path):
    root = datasets.make_monet(tmp_path / "monet")
    res = run_cli("data=monet", f"data.root={root}", "data.image_size=8", "data.batch_size=1",
                  module="gan_lab.explore", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "monet (train): 5 images, 3 channel(s) at 8x8, 1 class(es), 0 unreadable" in res.stdout
    (run,) = (tmp_path / "runs" / "explore" / "monet").iterdir()
    assert (run / "file_sizes.png").is_file() and not (run / "class_counts.png").exists()
    assert (run / "unreadable.txt").read_text() == ""
    missing = run_cli("data=monet", f"data.root={tmp_path / 'absent'}", module="gan_lab.explore", cwd=tmp_path)
    assert missing.returncode == 2 and "gan_lab: error: monet: the dataset was not found" in missing.stderr
