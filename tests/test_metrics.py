"""Metrics on known inputs: FID/KID/IS, Parzen log-likelihood, nearest neighbours, class accuracy."""
from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

from gan_lab.data.digits import Digits
from gan_lab.metrics import (DomainAutoencoder, DomainClassifier, class_accuracy, frechet_distance,
                             inception_score, kernel_distance, load_extractor, memorisation, nearest_neighbours,
                             parzen_evaluate, parzen_log_likelihood, select_sigma)
from gan_lab.metrics import extract_all
from gan_lab.pixels import to_float
from gan_lab.metrics.neighbours import neighbour_rows
from gan_lab.metrics.records import append_evaluation, read_metrics_json, update_metrics_json
from tests.conftest import refused


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
    return (to_float(images) + amount).clamp(-1, 1)


def features(extractor, images):
    return extract_all(extractor, images, 256, "cpu")[0]


def test_fid_of_a_set_against_itself_is_zero_and_grows_with_a_shift(digits, random_extractor):
    x = digits.dataset("train").images[:400]
    real = features(random_extractor, x)
    same = frechet_distance(real, real)
    small = frechet_distance(real, features(random_extractor, shifted(x, 0.2)))
    far = features(random_extractor, shifted(x, 0.6))
    large = frechet_distance(real, far)
    assert same < 1e-3 * small
    assert 0 < small < large
    kid_same, _ = kernel_distance(real, real, subset_size=200, subsets=20)
    kid_large, _ = kernel_distance(real, far, subset_size=200, subsets=20)
    assert abs(kid_same) < 0.05 * kid_large
    # seeded subsets: the same call gives the same value
    assert kernel_distance(real, far, subset_size=200, subsets=20) == kernel_distance(real, far, subset_size=200,
                                                                                     subsets=20)


def test_fid_matches_the_closed_form_for_gaussian_features():
    # FID(N(0, I), N(mu, s^2 I)) = |mu|^2 + d (1 - s)^2
    g = torch.Generator().manual_seed(0)
    d, n = 4, 40000
    mu, s = torch.tensor([1.0, 0.0, 0.0, 0.0]), 2.0
    real = torch.randn(n, d, generator=g)
    fake = mu + s * torch.randn(n, d, generator=g)
    assert frechet_distance(real, fake) == pytest.approx(1.0 + d * (1 - s) ** 2, rel=0.03)


def test_inception_score_counts_confident_distinct_classes():
    classes = torch.arange(400) % 4
    logits = 20.0 * torch.nn.functional.one_hot(classes, 4).float()  # certain, four equally used classes
    score, std = inception_score(logits, splits=1)
    assert score == pytest.approx(4.0, rel=1e-4) and std == 0.0  # one split: no spread (not NaN)
    one_class = 20.0 * torch.nn.functional.one_hot(torch.full((400,), 2), 4).float()
    assert inception_score(one_class, splits=4)[0] == pytest.approx(1.0, rel=1e-4)


class Replay:
    """A stand-in GAN module whose "generator" returns training images of random indices, at ``size``."""

    device = torch.device("cpu")
    training = False

    def __init__(self, images, size):
        self.images, self.size = images, size

    class noise:
        @staticmethod
        def sample(n, device):
            return torch.randint(0, 1000, (n, 1))

    def sample(self, z, labels):
        return torch.nn.functional.adaptive_avg_pool2d(to_float(self.images[z[:, 0]]), self.size)

    def sample_labels(self, n):
        return torch.zeros(n, dtype=torch.long)

    def eval(self):
        return self

    def train(self, mode=True):
        return self


def test_evaluator_extracts_each_image_set_once_and_real_features_once_per_evaluator(digits):
    from gan_lab.metrics.suite import Evaluator

    class Counting(DomainClassifier):
        passes: list = []

        def extract(self, images):
            self.passes.append(images.shape[0])
            return super().extract(images)

    evaluator = Evaluator(metrics=["fid", "kid", "is", "memorisation", "neighbours"], num_samples=60, num_real=300,
                          kid_subsets=3, neighbours=2, batch_size=1000)
    torch.manual_seed(0)
    evaluator._extractors["auto"] = Counting(1, 10).eval()
    replay = Replay(digits.dataset("train").images, 32)
    record, _ = evaluator.evaluate(replay, digits)
    assert sorted(Counting.passes) == [60, 180, 300]  # generated, val (all 180), train: one pass each
    assert set(record["results"]) == {"fid", "kid", "is", "memorisation", "neighbours"}
    Counting.passes.clear()
    again, _ = evaluator.evaluate(replay, digits)  # as the training callback does every few epochs
    assert Counting.passes == [60]  # only the generated images; real features are kept
    assert again["results"]["fid"]["value"] == pytest.approx(record["results"]["fid"]["value"], rel=1e-6)


def random_inception_weights(path):
    """torch-fidelity's Inception-v3 with its initial (random) weights, saved as its weights file is."""
    from unittest import mock

    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    empty = path.parent / "empty.pth"
    torch.save({}, empty)
    with mock.patch.object(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None):
        torch.manual_seed(0)
        net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    torch.save(net.state_dict(), path)
    return path


def test_inception_extractor_reads_torch_fidelity_weights_and_gives_features_and_logits_in_one_pass(
        digits, tmp_path, monkeypatch):
    from gan_lab.metrics.features import INCEPTION_FILE, InceptionExtractor
    from gan_lab.metrics.suite import Evaluator

    train, val = digits.dataset("train"), digits.dataset("val")
    splits = ((train.images, train.labels), (val.images, val.labels))
    weights = random_inception_weights(tmp_path / INCEPTION_FILE)
    extractor = load_extractor("digits", *splits, 10, cache_dir=tmp_path, kind="inception",
                               inception_weights=str(weights))
    assert isinstance(extractor, InceptionExtractor)
    x = train.images[:4]  # 1-channel uint8 32px: repeated to RGB, resized to 299px inside
    f, logits = extractor.extract(x)
    assert f.shape == (4, 2048) and logits.shape == (4, 1008) and torch.isfinite(f).all()
    assert torch.equal(extractor(x), f) and torch.equal(extractor.logits(to_float(x)), logits)  # float [-1, 1] too
    about = extractor.describe()
    assert about["extractor"] == "inception-v3-compat" and about["resize"].endswith("to 299px")
    assert about["extractor_checksum"] == hashlib.sha256(weights.read_bytes()).hexdigest()[:16]

    evaluator = Evaluator(metrics=["fid", "is"], num_samples=6, num_real=6, is_splits=2,
                          extractor={"kind": "inception", "inception_weights": str(weights)})
    record, flat = evaluator.evaluate(Replay(train.images, 32), digits)
    assert record["results"]["fid"]["extractor"] == "inception-v3-compat" and flat["val/fid"] >= 0
    assert record["results"]["is"]["extractor"] == "inception-v3-compat" and flat["val/is"] >= 1 - 1e-6

    # kind=auto finds the file where torchmetrics' first online FID leaves it: the torch hub cache
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with refused("kind=inception", INCEPTION_FILE, str(hub / "checkpoints"), "kind=domain"):
        load_extractor("digits", *splits, 10, cache_dir=tmp_path, kind="inception")
    (hub / "checkpoints").mkdir(parents=True)
    (hub / "checkpoints" / INCEPTION_FILE).write_bytes(weights.read_bytes())
    found = load_extractor("digits", *splits, 10, cache_dir=tmp_path, kind="auto")
    assert isinstance(found, InceptionExtractor) and found.checksum == about["extractor_checksum"]

    broken = tmp_path / "broken.pth"
    broken.write_bytes(weights.read_bytes()[:1000])  # an interrupted download
    with refused(f"inception_weights={broken}", INCEPTION_FILE, "kind=domain"):
        InceptionExtractor(broken)


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
    dist, idx = nearest_neighbours(to_float(generated), to_float(train), k=3)
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


def test_memorisation_threshold_is_the_nearest_other_image_of_the_whole_training_set():
    """Training points 1 apart on a line: every point's nearest other point is at 1, also when the
    threshold is estimated on 5 of the 40 (whose nearest other among themselves would be farther)."""
    train = torch.arange(40.0).unsqueeze(1)
    generated = torch.tensor([[3.5], [17.2], [40.5], [42.0]])  # at 0.5, 0.2, 1.5 and 3 from the set
    res = memorisation(generated, train, max_reference=5, seed=3)
    assert res["threshold"] == 1.0
    assert res["value"] == 0.5 and res["median_nn_distance"] == pytest.approx(0.5)  # the lower median


def sorted_mnist(root, per_class: int, per_class_val: int):
    """MNIST files whose images are stored class by class (all the 0s, then all the 1s, ...); image of
    class c: noise around the grey level 20 c."""
    from tests.datasets import write_idx

    g = np.random.default_rng(0)
    root.mkdir(parents=True)
    for prefix, n in (("train", per_class), ("t10k", per_class_val)):
        labels = np.repeat(np.arange(10), n).astype(np.uint8)
        images = (labels[:, None, None] * 20 + g.integers(0, 40, (labels.size, 28, 28))).astype(np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def classes_of(images: torch.Tensor) -> set[int]:
    """The classes of :func:`sorted_mnist` images (their mean grey level, about 20 c + 20)."""
    return {round((float(x.float().mean()) - 19.5) / 20) for x in images}


def test_real_images_are_a_fixed_random_sample_and_neighbours_and_memorisation_use_the_training_split(tmp_path):
    """A split stored class by class: the ``num_real`` reference images span its classes (not the
    first classes only), are the same in every evaluation, and nearest neighbours and memorisation
    compare with the training split also when the other metrics use ``real_split=val``."""
    from gan_lab.data.mnist import MNIST
    from gan_lab.metrics.suite import Context, Evaluator

    dm = MNIST(root=str(sorted_mnist(tmp_path / "mnist", 100, 30)), image_size=28, batch_size=10)
    dm.setup("fit")
    train = dm.dataset("train").images
    assert classes_of(train[:50]) == {0}  # the first 50 images: one class
    evaluator = Evaluator(metrics=["fid", "memorisation", "neighbours", "parzen"], num_samples=60, num_real=50,
                          real_split="val", neighbours=4, neighbours_k=1, parzen_samples=60, parzen_sigmas=[0.1, 0.3])
    torch.manual_seed(0)
    evaluator._extractors["auto"] = DomainClassifier(1, 10).eval()
    context = Context(evaluator, Replay(train, 28), dm, "cpu", None, 60)
    assert len(context.real_images) == 50 and len(classes_of(context.real_images)) >= 8
    assert len(context.train_images) == 50 and len(classes_of(context.train_images)) >= 8
    val = dm.dataset("val").images
    assert all(any(torch.equal(x, v) for v in val) for x in context.real_images)  # val images, each once
    assert len({x.numpy().tobytes() for x in context.real_images}) == 50
    assert torch.equal(Context(evaluator, Replay(train, 28), dm, "cpu", None, 60).real_images, context.real_images)

    record, _ = evaluator.evaluate(Replay(train, 28), dm)
    res = record["results"]
    assert res["fid"]["split"] == "val" and res["fid"]["num_real"] == 50
    assert res["fid"]["real_chosen"] == "50 of 300 at random (seed 0)"
    assert res["memorisation"]["split"] == "train" and res["memorisation"]["real_chosen"] == "50 of 1000 at random (seed 0)"
    # held-out val images are not their own training neighbours: a baseline below 1 (against val itself, 1)
    assert res["memorisation"]["baseline"] < 0.9
    assert res["neighbours"]["split"] == "train"
    # the generator replays training images: with every training image a reference, each finds itself
    whole = Evaluator(metrics=["neighbours"], num_samples=60, num_real=1000, real_split="val", neighbours=4,
                      neighbours_k=1)
    whole._extractors["auto"] = evaluator._extractors["auto"]
    found = whole.evaluate(Replay(train, 28), dm)[0]["results"]["neighbours"]
    assert found["num_real"] == 1000 and max(found["pixel_distance"]) < 0.05 and "real_chosen" not in found
    assert res["parzen"]["split"] == "val: 150 of 300 at random (seed 0)" and res["parzen"]["sigma_split"] == "val: the other 150"


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

    evaluator = Evaluator(metrics=["parzen", "neighbours"], num_samples=50, parzen_samples=200, neighbours=3,
                          neighbours_k=2, parzen_sigmas=[0.1, 0.3])
    evaluator._extractors["auto"] = DomainClassifier(1, 10).eval()
    record, flat = evaluator.evaluate(Replay(digits.dataset("train").images, 16), digits)
    res = record["results"]
    assert res["parzen"]["space"] == "pixels in [0, 1], 1x16x16" and res["parzen"]["resize"] == "area to 16px"
    assert max(res["neighbours"]["pixel_distance"]) < 0.05  # replayed training images find themselves
    assert "val/parzen_ll" in flat and record["generator_weights"] == "live"


@pytest.mark.parametrize("num_classes", [10, 1])
def test_loading_a_cached_extractor_leaves_the_random_stream_alone(tmp_path, num_classes):
    """An evaluation during training must not change the run: training the domain extractor is forked
    from torch's stream, and so is building it from the cache (its initial weights are drawn, then
    overwritten)."""
    from gan_lab.metrics.features import load_extractor

    g = torch.Generator().manual_seed(0)
    size = 8 if num_classes > 1 else 32  # the auto-encoder works at 32px
    images = torch.randint(0, 256, (40, 1, size, size), dtype=torch.uint8, generator=g)
    labels = torch.arange(40) % 10 if num_classes > 1 else torch.zeros(40, dtype=torch.long)
    args = ("digits", (images, labels), (images[:10], labels[:10]), num_classes)
    for _ in range(2):  # the first call trains and caches it, the second loads it
        torch.manual_seed(123)
        load_extractor(*args, cache_dir=tmp_path, kind="domain", input_size=size, steps=2)
        after = torch.rand(3)
        torch.manual_seed(123)
        assert torch.equal(after, torch.rand(3))
