"""Metrics on known inputs: FID/KID/IS, Parzen log-likelihood, nearest neighbours, class accuracy."""
from __future__ import annotations

import math

import pytest
import torch

from gan_lab.data.digits import Digits
from gan_lab.metrics import (DomainAutoencoder, DomainClassifier, class_accuracy, frechet_distance,
                             inception_score, kernel_distance, load_extractor, memorisation, nearest_neighbours,
                             parzen_evaluate, parzen_log_likelihood, select_sigma)
from gan_lab.metrics.features import as_float
from gan_lab.metrics.neighbours import neighbour_rows
from gan_lab.metrics.records import append_evaluation, read_metrics_json, update_metrics_json


@pytest.fixture(scope="module")
def digits():
    dm = Digits(image_size=32, batch_size=64)
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def random_extractor():
    torch.manual_seed(0)
    return DomainClassifier(channels=1, num_classes=10).eval()


def shifted(images: torch.Tensor, amount: float) -> torch.Tensor:
    return (as_float(images) + amount).clamp(-1, 1)


def test_fid_of_a_set_against_itself_is_zero_and_grows_with_a_shift(digits, random_extractor):
    x = digits.dataset("train").images[:400]
    same = frechet_distance(x, x, random_extractor)
    small = frechet_distance(x, shifted(x, 0.2), random_extractor)
    large = frechet_distance(x, shifted(x, 0.6), random_extractor)
    assert same < 1e-3 * small
    assert 0 < small < large
    kid_same, _ = kernel_distance(x, x, random_extractor, subset_size=200, subsets=20)
    kid_large, _ = kernel_distance(x, shifted(x, 0.6), random_extractor, subset_size=200, subsets=20)
    assert abs(kid_same) < 0.05 * kid_large
    # seeded subsets: the same call gives the same value
    assert kernel_distance(x, shifted(x, 0.6), random_extractor, subset_size=200, subsets=20) == \
        kernel_distance(x, shifted(x, 0.6), random_extractor, subset_size=200, subsets=20)


def test_inception_score_counts_confident_distinct_classes():
    class OneHot(DomainClassifier):  # logits = 20 * one-hot of a class encoded in the first pixel
        def logits(self, images):
            return 20.0 * torch.nn.functional.one_hot(images[:, 0, 0, 0].long(), 4).float()

    extractor = OneHot(channels=1, num_classes=4)
    images = torch.zeros(400, 1, 4, 4, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(400) % 4
    score, _ = inception_score(images, extractor, splits=1)
    assert score == pytest.approx(4.0, rel=1e-4)  # four equally used, certain classes
    images[:, 0, 0, 0] = 2
    assert inception_score(images, extractor, splits=4)[0] == pytest.approx(1.0, rel=1e-4)


def test_parzen_matches_the_direct_formula():
    g = torch.Generator().manual_seed(0)
    centers, x, sigma = torch.rand(50, 6, generator=g), torch.rand(7, 6, generator=g), 0.3
    expected = []
    for xi in x.double():
        terms = [math.exp(-float(((xi - c.double()) ** 2).sum()) / (2 * sigma ** 2)) for c in centers]
        expected.append(math.log(sum(terms) / len(centers)) - 3 * math.log(2 * math.pi * sigma ** 2))
    got = parzen_log_likelihood(x, centers, sigma, batch_size=3, chunk_size=16)  # batches and chunks
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64), atol=1e-9)


def test_parzen_of_gaussian_samples_matches_the_analytic_kernel_density():
    # kernels of width sigma on samples of N(0, s^2 I) estimate the density N(0, (s^2 + sigma^2) I)
    g = torch.Generator().manual_seed(1)
    d, s, sigma = 2, 0.5, 0.2
    centers = s * torch.randn(20000, d, generator=g)
    x = s * torch.randn(2000, d, generator=g)
    var = s ** 2 + sigma ** 2
    analytic = (-0.5 * d * math.log(2 * math.pi * var) - x.double().square().sum(1) / (2 * var)).mean()
    assert parzen_log_likelihood(x, centers, sigma).mean().item() == pytest.approx(analytic.item(), abs=0.02)
    # the grid search prefers a bandwidth near the one that fits, not the extremes of the grid
    best, curve = select_sigma(centers[:2000], x[:500], sigmas=[0.01, 0.05, 0.1, 0.2, 1.0, 5.0])
    assert best in (0.05, 0.1, 0.2) and len(curve) == 6


def test_parzen_protocol_on_images_reports_mean_and_stderr(digits):
    val = digits.dataset("val").images
    res = parzen_evaluate(digits.dataset("train").images[:500], val[:90], val[90:], sigmas=[0.1, 0.2, 0.4])
    assert res["sigma"] in (0.1, 0.2, 0.4) and res["stderr"] > 0
    assert math.isfinite(res["value"]) and len(res["sigma_curve"]) == 3


def test_nearest_neighbour_finds_a_planted_copy(digits, random_extractor):
    train = digits.dataset("train").images[:600]
    g = torch.Generator().manual_seed(0)
    generated = torch.randint(0, 256, (10, 1, 32, 32), generator=g, dtype=torch.uint8)
    generated[4] = train[123]
    dist, idx = nearest_neighbours(as_float(generated), as_float(train), k=3)
    assert dist[4, 0] == 0 and torch.equal(train[idx[4, 0]], train[123])
    assert (dist[:, 0] > 0).sum() == 9 and (dist[:, :-1] <= dist[:, 1:]).all()
    fdist, fidx = nearest_neighbours(random_extractor(generated), random_extractor(train), k=1)
    assert fdist[4, 0] < 1e-3 and torch.equal(train[fidx[4, 0]], train[123])
    rows = neighbour_rows(generated, train, idx)
    assert rows.shape == (40, 1, 32, 32) and torch.equal(rows[16], generated[4]) and torch.equal(rows[17], train[123])
    # memorisation: the copy (and only it) is closer than typical train-to-train distances
    feats_train = random_extractor(train)
    res = memorisation(random_extractor(generated), feats_train, random_extractor(digits.dataset("val").images))
    assert res["value"] == pytest.approx(0.1) and 0.2 < res["baseline"] < 0.8
    copies = memorisation(feats_train[:50], feats_train)
    assert copies["value"] == 1.0


def test_class_accuracy_per_class_and_overall():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    res = class_accuracy(torch.tensor([0, 1, 1, 1, 0, 0]), labels, ["a", "b", "c", "d"])
    assert res["value"] == pytest.approx(0.5)
    assert res["per_class"] == {"a": 0.5, "b": 1.0, "c": 0.0}


def test_domain_extractor_is_trained_once_and_cached(digits, tmp_path):
    train, val = digits.dataset("train"), digits.dataset("val")
    args = dict(dataset="digits", train=(train.images, train.labels), val=(val.images, val.labels),
                num_classes=10, cache_dir=tmp_path, kind="domain", steps=30)
    first = load_extractor(**args)
    assert first.name.startswith("classifier-digits-32px-") and 0 <= first.quality["val_accuracy"] <= 1
    cached = list(tmp_path.glob("*.pt"))
    assert len(cached) == 1
    second = load_extractor(**args)
    assert second.checksum == first.checksum and second.quality == first.quality
    assert first.describe()["extractor_checksum"] == first.checksum
    with pytest.raises(ValueError, match="kind=inception"):
        load_extractor(**{**args, "kind": "inception"})
    # unlabelled data: an auto-encoder's encoder, reported with its reconstruction error
    auto = load_extractor(**{**args, "num_classes": 1, "steps": 10})
    assert isinstance(auto, DomainAutoencoder) and auto.logits(train.images[:2]) is None
    assert auto(train.images[:3]).shape == (3, auto.num_features) and auto.quality["val_mse"] > 0


def test_metrics_json_writers_keep_each_others_keys(tmp_path):
    path = tmp_path / "metrics.json"
    append_evaluation(path, {"results": {"fid": {"value": 1.0}}})
    update_metrics_json(path, {"status": "completed", "epochs": 2})
    append_evaluation(path, {"results": {"fid": {"value": 0.5}}})
    data = read_metrics_json(path)
    assert data["status"] == "completed" and [e["results"]["fid"]["value"] for e in data["evaluations"]] == [1.0, 0.5]


def test_evaluation_at_a_lower_generator_resolution_compares_with_downsampled_data(digits):
    """A progressive GAN mid-growth generates 16px images from 32px data: real images are area-downsampled."""
    from gan_lab.metrics.suite import Evaluator

    class Replay:  # a "generator" that returns downsampled training images of random indices
        device = torch.device("cpu")
        training = False

        class noise:
            @staticmethod
            def sample(n, device):
                return torch.randint(0, 1000, (n, 1))

        def sample(self, z, labels):
            images = as_float(digits.dataset("train").images[z[:, 0]])
            return torch.nn.functional.adaptive_avg_pool2d(images, 16)

        def sample_labels(self, n):
            return torch.zeros(n, dtype=torch.long)

        def eval(self):
            return self

        def train(self, mode=True):
            return self

    evaluator = Evaluator(metrics=["parzen", "neighbours"], num_samples=50, parzen_samples=200, neighbours=3,
                          neighbours_k=2, parzen_sigmas=[0.1, 0.3])
    evaluator._extractors["auto"] = DomainClassifier(1, 10).eval()
    record, flat = evaluator.evaluate(Replay(), digits)
    res = record["results"]
    assert res["parzen"]["space"] == "pixels in [0, 1], 1x16x16" and res["parzen"]["resize"] == "area to 16px"
    assert max(res["neighbours"]["pixel_distance"]) < 0.05  # replayed training images find themselves
    assert "val/parzen_ll" in flat and record["generator_weights"] == "live"
