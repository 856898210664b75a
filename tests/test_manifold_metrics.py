"""Precision / recall (Kynkäänniemi et al. 2019) and density / coverage (Naeem et al. 2020): values
worked out by hand on small point sets, the behaviour that tells them apart on generators that
collapse or spread, and their place in an evaluation."""
from __future__ import annotations

import pytest
import torch

from gan_lab.build import check_types
from gan_lab.data.digits import Digits
from gan_lab.errors import UserError
from gan_lab.metrics import DomainClassifier
from gan_lab.metrics.manifold import ball_radii, density_coverage, precision_recall
from gan_lab.metrics.suite import Evaluator
from tests.conftest import compose_config
from tests.test_metrics import Replay


def column(*values: float) -> torch.Tensor:
    return torch.tensor(values).reshape(-1, 1)


REAL = column(0, 1, 2, 3, 10)   # k=1 radii: 1, 1, 1, 1, 7
FAKE = column(0.5, 20, 2.5)     # k=1 radii: 2, 17.5, 2


def test_ball_radii_are_the_distance_to_the_kth_other_point():
    assert ball_radii(REAL, 1).tolist() == [1, 1, 1, 1, 7]
    assert ball_radii(REAL, 2).tolist() == [2, 1, 1, 2, 8]
    assert ball_radii(FAKE, 1).tolist() == [2, 17.5, 2]
    with pytest.raises(ValueError, match="k=5 needs 1 <= k < 5"):
        ball_radii(REAL, 5)


def test_precision_and_recall_by_hand():
    res = precision_recall(REAL, FAKE, k=1)
    # 0.5 lies in the balls of 0 and 1, 2.5 in those of 2 and 3; 20 is 10 from 10, whose ball reaches 7
    assert res["precision"] == pytest.approx(2 / 3)
    # every real point lies in a generated ball: 0..3 within 2 of 0.5 or 2.5, 10 within 17.5 of 20
    assert res["recall"] == 1.0 and res["k"] == 1


def test_density_and_coverage_by_hand():
    res = density_coverage(REAL, FAKE, k=1)
    # real balls around 0.5: those of 0 and 1; around 2.5: of 2 and 3; around 20: none -> 4 / (1 * 3)
    assert res["density"] == pytest.approx(4 / 3)
    # the balls of 0, 1, 2, 3 hold a generated point; that of 10 (radius 7, nearest 2.5 at 7.5) none
    assert res["coverage"] == pytest.approx(4 / 5) and res["k"] == 1


def test_surfaces_count_as_inside_for_precision_and_outside_for_density():
    real, fake = column(0, 1), column(2, -1)   # k=1: real radii 1 and 1; 2 and -1 lie on the balls' surfaces
    assert precision_recall(real, fake, 1)["precision"] == 1.0
    res = density_coverage(real, fake, 1)
    assert res["density"] == 0.0 and res["coverage"] == 0.0


def test_a_collapsed_generator_is_precise_but_recalls_little_and_a_spread_one_the_reverse():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(2000, 8, generator=g)
    same = torch.randn(2000, 8, generator=g)
    collapsed = real[:20].repeat(100, 1) + 0.01 * torch.randn(2000, 8, generator=g)  # 20 modes of the data
    spread = 3 * torch.randn(2000, 8, generator=g)
    fair = precision_recall(real, same)
    assert fair["precision"] > 0.8 and fair["recall"] > 0.8
    fair_dc = density_coverage(real, same)
    assert 0.8 < fair_dc["density"] < 1.2 and fair_dc["coverage"] > 0.9
    mode = precision_recall(real, collapsed)
    assert mode["precision"] > 0.99 and mode["recall"] < 0.1
    assert density_coverage(real, collapsed)["coverage"] < 0.15
    wide = precision_recall(real, spread)
    assert wide["precision"] < 0.1 and wide["recall"] > fair["recall"]
    assert density_coverage(real, spread)["density"] < 0.1


def test_an_evaluation_logs_the_four_values_with_their_protocol():
    dm = Digits(image_size=32, batch_size=64)
    dm.setup("fit")
    evaluator = Evaluator(metrics=["precision_recall", "density_coverage"], num_samples=300, num_real=300)
    evaluator._extractors["auto"] = DomainClassifier(1, 10).eval()
    record, flat = evaluator.evaluate(Replay(dm.dataset("train").images, 32), dm)
    pr, dc = record["results"]["precision_recall"], record["results"]["density_coverage"]
    assert pr["k"] == 3 and dc["k"] == 5 and pr["num_generated"] == 300 and pr["num_real"] == 300
    assert pr["space"] == "features" and pr["split"] == "train"
    # the "generator" replays training images: nearly all of them are realistic
    assert pr["precision"] > 0.9
    assert flat == {"val/precision": pr["precision"], "val/recall": pr["recall"],
                    "val/density": dc["density"], "val/coverage": dc["coverage"]}


def test_too_few_images_skip_and_a_bad_k_is_refused():
    dm = Digits(image_size=32, batch_size=64)
    dm.setup("fit")
    evaluator = Evaluator(metrics=["density_coverage"], num_samples=5, num_real=300)
    evaluator._extractors["auto"] = DomainClassifier(1, 10).eval()
    record, flat = evaluator.evaluate(Replay(dm.dataset("train").images, 32), dm)
    assert record["results"]["density_coverage"] == {"skipped": "5 images in the smaller set; need more than k=5"}
    assert flat == {}
    cfg = compose_config(["callbacks=with_metrics", "callbacks.metrics.evaluator.precision_recall_k=0"])
    with pytest.raises(UserError, match=r"^callbacks\.metrics\.evaluator\.precision_recall_k=0 must be "):
        check_types(cfg.callbacks.metrics, "callbacks.metrics")


@pytest.mark.parametrize("k", [3, 5])
def test_manifold_metrics_equal_the_prdc_package(k):
    """Naeem et al.'s reference implementation (``prdc``) gives the same four values on the same features."""
    from prdc import compute_prdc

    torch.manual_seed(k)
    real, fake = torch.randn(300, 16), torch.randn(250, 16) * 1.2 + 0.3
    expected = compute_prdc(real.double().numpy(), fake.double().numpy(), k)
    got = {**precision_recall(real.double(), fake.double(), k), **density_coverage(real.double(), fake.double(), k)}
    for name in ("precision", "recall", "density", "coverage"):
        assert got[name] == pytest.approx(float(expected[name]), abs=1e-12), name
