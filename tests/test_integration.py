"""Models x datasets from their official formats, through the real training function."""
from __future__ import annotations

import pytest

from gan_lab.errors import UserError
from gan_lab.run import train
from tests import datasets

SMALL = ["trainer.max_epochs=1", "trainer.limit_train_batches=1", "data.batch_size=2"]


@pytest.mark.parametrize("data", ["wikiart_genre", "wikiart_style", "wikiart_artist"])
def test_artgan_on_wikiart_splits(make_cfg, tmp_path, data):
    root = datasets.make_wikiart(tmp_path / "wikiart")
    cfg = make_cfg("model=artgan", f"data={data}", f"data.root={root}", "data.image_size=32", *SMALL,
                   "model.generator.width=4", "model.discriminator.width=4")
    train(cfg)
    assert cfg.data.num_classes == 3
    summary = (tmp_path / "run" / "metrics.json").read_text()
    assert '"status": "completed"' in summary
    assert (tmp_path / "run" / "samples" / "final.png").is_file()


def test_cdcgan_on_cifar10_at_64(make_cfg, tmp_path):
    root = datasets.make_cifar10(tmp_path / "cifar10")
    cfg = make_cfg("model=cdcgan", "data=cifar10", f"data.root={root}", "data.image_size=64", *SMALL,
                   "model.generator.width=4", "model.discriminator.width=4")
    train(cfg)
    assert cfg.data.class_names[:2] == ["airplane", "automobile"]
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_conditional_model_on_unlabelled_folder_is_a_user_error(make_cfg, tmp_path):
    root = datasets.make_monet(tmp_path / "monet")
    cfg = make_cfg("model=cdcgan", "data=monet", f"data.root={root}", "data.image_size=32", *SMALL)
    with pytest.raises(UserError, match="class"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()
