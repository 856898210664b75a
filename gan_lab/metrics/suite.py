"""One evaluation of a GAN (:class:`Evaluator`): a ``metrics.json`` record storing each metric with its protocol
(image counts, split, resize, extractor name and checksum), and flat ``val/...`` values for the loggers."""
from __future__ import annotations

import os
import time
from functools import cached_property
from pathlib import Path
from typing import Annotated, Callable, Sequence

import torch
from pydantic import Field
from torch import Tensor

from gan_lab.constraints import AnyInt, Count, Positive, Probability
from gan_lab.errors import UserError
from gan_lab.grids import save_grid
from gan_lab.metrics.classes import class_accuracy
from gan_lab.metrics.features import FeatureExtractor, extract_all, load_extractor
from gan_lab.metrics.fid import frechet_distance, inception_score, kernel_distance
from gan_lab.metrics.manifold import density_coverage, precision_recall
from gan_lab.metrics.neighbours import memorisation, nearest_neighbours, neighbour_rows
from gan_lab.metrics.parzen import DEFAULT_SIGMAS, parzen_evaluate
from gan_lab.metrics.sampling import ema_weights, generate_images
from gan_lab.metrics.scores import score_histogram
from gan_lab.pixels import to_float, to_unit


def default_cache_dir(datamodule) -> Path:
    """Next to the dataset's cache when the DataModule has a data folder, else the user cache."""
    for attr in ("cache_dir", "root", "data_dir"):
        value = getattr(datamodule, attr, None)
        if isinstance(value, (str, os.PathLike)):
            return Path(value) / "feature_extractors"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gan_lab" / "feature_extractors"


#: seed of the random choice of a split's reference images (fixed: every run compares with the same)
REFERENCE_SEED = 0


class _Split:
    """Images and labels of a split, at the generator's resolution (area-downsampled, as a DataModule serves a
    lower resolution)."""

    def __init__(self, dataset, size: int) -> None:
        images = dataset.images
        if images.shape[-1] != size:
            images = torch.nn.functional.adaptive_avg_pool2d(images.float(), size).round().clamp(0, 255).to(torch.uint8)
        self.images, self.labels = images, dataset.labels

    def __len__(self) -> int:
        return self.images.shape[0]

    def sample(self, cap: int) -> tuple[Tensor, Tensor]:
        """At most ``cap`` of the split's images and their labels: all, or ``cap`` sorted rows chosen at random
        (:data:`REFERENCE_SEED`)."""
        n = len(self)
        rows = torch.arange(n) if n <= cap else \
            torch.randperm(n, generator=torch.Generator().manual_seed(REFERENCE_SEED))[:cap].sort().values
        return self.images[rows], self.labels[rows]

    def chosen(self, cap: int) -> str | None:
        """How :meth:`sample` chose, for a record; ``None`` when it took every image."""
        return None if len(self) <= cap else f"{cap} of {len(self)} at random (seed {REFERENCE_SEED})"


#: a number of images that a distance or a spread is computed over
TwoOrMore = Annotated[int, Field(ge=2)]


class Evaluator:
    """Runs the chosen metrics on a GAN module and its DataModule.

    Args:
        metrics: any of ``fid, kid, is, precision_recall, density_coverage, parzen, neighbours,
            memorisation, accuracy, scores``.
        num_samples: generated images for FID/KID/IS/memorisation/scores (and per-class total for accuracy).
        num_real: cap on the real images of a split (a fixed random sample, seed :data:`REFERENCE_SEED`).
        real_split: split that FID, KID, precision/recall and density/coverage compare with;
            nearest neighbours and memorisation always use ``train``.
        parzen_samples: generated images that carry a Parzen kernel.
        parzen_sigmas: bandwidth grid (default ``logspace(-1, 0, 10)``).
        kid_subset_size: capped by the set sizes.
        neighbours, neighbours_k: rows and neighbours per row of the nearest-neighbour grids.
        memorisation_quantile: quantile of train-to-train nearest distances used as threshold.
        precision_recall_k, density_coverage_k: the neighbour that sets a ball's radius.
        extractor: ``kind`` (auto | inception | domain), ``input_size``, ``steps``,
            ``inception_weights`` and ``cache_dir`` (default: next to the data, else the user cache).
        seed: seed of the sampled latents and labels.
        ema: sample from ``generator_ema`` when the module has one.
    """

    def __init__(self, metrics: Sequence[str] = ("fid", "kid", "is"), num_samples: TwoOrMore = 10000,
                 num_real: TwoOrMore = 10000, real_split: str = "train", parzen_samples: Count = 10000,
                 parzen_sigmas: Annotated[Sequence[Positive], Field(min_length=1)] | None = None,
                 kid_subset_size: TwoOrMore = 1000, kid_subsets: Count = 100, is_splits: Count = 10,
                 neighbours: Count = 8, neighbours_k: Count = 5, memorisation_quantile: Probability = 0.5,
                 precision_recall_k: Count = 3, density_coverage_k: Count = 5, extractor: dict | None = None,
                 batch_size: Count = 256, seed: AnyInt = 0, ema: bool = True) -> None:
        if isinstance(metrics, str):
            raise UserError(f"evaluator.metrics={metrics!r} must be a list; e.g. evaluator.metrics=[{metrics}].")
        metrics = [str(m) for m in metrics]
        if not metrics:
            raise UserError("evaluator.metrics=[] chooses no metric; e.g. evaluator.metrics=[fid,kid].")
        if unknown := sorted(set(metrics) - set(METRICS)):
            raise UserError(f"evaluator.metrics={unknown} unknown; choose from {', '.join(METRICS)}.")
        self.metrics = metrics
        self.num_samples, self.num_real, self.real_split = int(num_samples), int(num_real), real_split
        self.parzen_samples = int(parzen_samples)
        self.parzen_sigmas = tuple(float(s) for s in (parzen_sigmas or DEFAULT_SIGMAS))
        self.kid_subset_size, self.kid_subsets, self.is_splits = int(kid_subset_size), int(kid_subsets), int(is_splits)
        self.neighbours, self.neighbours_k = int(neighbours), int(neighbours_k)
        self.memorisation_quantile = float(memorisation_quantile)
        self.precision_recall_k, self.density_coverage_k = int(precision_recall_k), int(density_coverage_k)
        self.extractor_cfg = dict(extractor or {})
        self.batch_size, self.seed, self.ema = int(batch_size), int(seed), bool(ema)
        self._extractors: dict[str, FeatureExtractor] = {}
        self._real_features: dict[tuple, Tensor] = {}

    # --- feature extractors --------------------------------------------------------------

    def extractor(self, datamodule, device, kind: str | None = None) -> FeatureExtractor:
        cfg = {k: v for k, v in self.extractor_cfg.items() if k != "kind"}
        kind = kind or self.extractor_cfg.get("kind", "auto")
        if kind not in self._extractors:
            # the whole training split, also with data.subset: the feature space must not depend on it
            full = "train_full" if getattr(datamodule, "subset", None) is not None else "train"
            train, val = datamodule.dataset(full), datamodule.dataset("val")
            cache_dir = cfg.pop("cache_dir", None) or default_cache_dir(datamodule)
            self._extractors[kind] = load_extractor(
                getattr(datamodule, "name", type(datamodule).__name__.lower()),
                (train.images, train.labels), (val.images, val.labels), int(datamodule.num_classes),
                cache_dir=cache_dir, kind=kind, device=device, **cfg)
        return self._extractors[kind].to(device)

    def classifier(self, datamodule, device) -> FeatureExtractor | None:
        """A classifier of the dataset's own classes (the domain one when FID uses Inception)."""
        if int(datamodule.num_classes) < 2:
            return None
        main = self.extractor(datamodule, device)
        return main if main.num_classes == int(datamodule.num_classes) else self.extractor(datamodule, device, "domain")

    # --- the evaluation ------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, model, datamodule, out_dir: str | Path | None = None) -> tuple[dict, dict[str, float]]:
        """Run the metrics; returns (record for ``metrics.json``, ``{"val/<name>": value}``).
        Pictures (neighbour grids, score histogram) go to ``out_dir`` when given."""
        start = time.time()
        device = model.device
        out_dir = Path(out_dir) if out_dir is not None else None
        was_training = model.training
        model.eval()
        try:
            with ema_weights(model, self.ema) as weights:
                num_drawn = max(self.num_samples, self.parzen_samples if "parzen" in self.metrics else 0)
                context = Context(self, model, datamodule, device, out_dir, num_drawn)
                results = {name: compute(context) for name, compute in REGISTRY.items() if name in self.metrics}
        finally:
            model.train(was_training)
        record = {"generator_weights": weights, "seed": self.seed, "device": str(device),
                  "seconds": round(time.time() - start, 2), "results": results}
        return record, logged_values(results)


# --- the metrics: one function each over a shared context ------------------------------------


class Context:
    """What one evaluation's metrics share, each computed once when first asked for: ``num_drawn`` generated images
    (metrics use the first ``num_samples``, Parzen all); real splits at the generator's resolution (``real_images``
    from ``real_split``, ``train_images`` from ``train``, capped at ``num_real``; ``val``); the extractor, features."""

    def __init__(self, evaluator: Evaluator, model, datamodule, device, out_dir: Path | None, num_drawn: int) -> None:
        self.evaluator, self.model, self.datamodule, self.device, self.out_dir = evaluator, model, datamodule, device, out_dir
        self.n_gen = evaluator.num_samples
        self.fake_all, self.fake_labels_all = generate_images(model, num_drawn, evaluator.seed, evaluator.batch_size)
        self.fake, self.fake_labels = self.fake_all[:self.n_gen], self.fake_labels_all[:self.n_gen]
        size = self.fake.shape[-1]
        self.real = _Split(datamodule.dataset(evaluator.real_split), size)
        self.val = _Split(datamodule.dataset("val"), size)
        self.real_images, _ = self.real.sample(evaluator.num_real)
        self.train = self.real if evaluator.real_split == "train" else _Split(datamodule.dataset("train"), size)
        self.train_images, _ = self.train.sample(evaluator.num_real)
        self.resized = size != datamodule.dataset("val").images.shape[-1]
        #: the protocol fields of a comparison with real_split, and with the training split
        self.base = self.comparison(self.real, evaluator.real_split)
        self.on_train = self.comparison(self.train, "train")

    def comparison(self, split: _Split, name: str) -> dict:
        """The protocol fields of a record comparing the generated images with ``split`` (``name``)."""
        cap = self.evaluator.num_real
        fields = {"num_generated": self.n_gen, "split": name, "num_real": min(len(split), cap),
                  "image_size": self.fake.shape[-1]}
        if chosen := split.chosen(cap):
            fields["real_chosen"] = chosen
        if self.resized:
            fields["real_resize"] = f"area to {self.fake.shape[-1]}px"
        return fields

    @cached_property
    def extractor(self) -> FeatureExtractor:
        return self.evaluator.extractor(self.datamodule, self.device)

    @cached_property
    def about(self) -> dict:
        """The extractor's name, checksum and quality, stored with every feature-space value."""
        return self.extractor.describe()

    @cached_property
    def fake_features_and_logits(self) -> tuple[Tensor, Tensor | None]:
        """Features and logits of the generated images: one pass, shared by every metric."""
        return extract_all(self.extractor, self.fake, self.evaluator.batch_size, self.device)

    @property
    def fake_features(self) -> Tensor:
        return self.fake_features_and_logits[0]

    def features_of(self, split: str, images: Tensor) -> Tensor:
        """Features of ``images`` of a real split, kept by the evaluator by extractor, split storage and image shape."""
        cache, source = self.evaluator._real_features, self.datamodule.dataset(split).images
        key = (self.extractor.name, self.extractor.checksum, split, source.data_ptr(), tuple(images.shape))
        if key not in cache:  # kept in host memory: a growing model adds a size per resolution
            cache[key] = extract_all(self.extractor, images, self.evaluator.batch_size, self.device)[0].cpu()
        return cache[key].to(self.device)

    @cached_property
    def real_features(self) -> Tensor:
        return self.features_of(self.evaluator.real_split, self.real_images)

    @cached_property
    def train_features(self) -> Tensor:
        return self.real_features if self.train is self.real else self.features_of("train", self.train_images)

    @cached_property
    def val_features(self) -> Tensor:
        return self.features_of("val", self.val.sample(self.evaluator.num_real)[0])


def fid(context: Context) -> dict:
    return {"value": frechet_distance(context.real_features, context.fake_features), **context.base, **context.about}


def kid(context: Context) -> dict:
    ev = context.evaluator
    size = min(ev.kid_subset_size, len(context.real_images), context.n_gen)
    mean, std = kernel_distance(context.real_features, context.fake_features, size, ev.kid_subsets, ev.seed)
    return {"value": mean, "std": std, **context.base, "subset_size": size, "subsets": ev.kid_subsets, **context.about}


def inception(context: Context) -> dict:
    ev = context.evaluator
    scorer = context.extractor if context.extractor.num_classes else ev.classifier(context.datamodule, context.device)
    if scorer is None:
        return {"skipped": "unlabelled data and no Inception weights: no classifier for IS"}
    logits = context.fake_features_and_logits[1] if scorer is context.extractor \
        else extract_all(scorer, context.fake, ev.batch_size, context.device)[1]
    mean, std = inception_score(logits, ev.is_splits, ev.seed)
    return {"value": mean, "std": std, "num_generated": context.n_gen, "splits": ev.is_splits, "num_real": 0,
            **scorer.describe()}


def _manifold(context: Context, measure: Callable[..., dict], k: int) -> dict:
    """Precision/recall or density/coverage (:mod:`gan_lab.metrics.manifold`) of the features."""
    smallest = min(len(context.real_images), context.n_gen)
    if smallest <= k:
        return {"skipped": f"{smallest} images in the smaller set; need more than k={k}"}
    return {**measure(context.real_features, context.fake_features, k), **context.base, "space": "features", **context.about}


def parzen(context: Context) -> dict:
    ev, val = context.evaluator, context.val
    half = len(val) // 2
    if half < 2:
        return {"skipped": f"the val split has {len(val)} images; need >= 4"}
    fake = context.fake_all[:ev.parzen_samples]
    # the val split in two random halves: sigma chosen on one, the log-likelihood reported on the other
    rows = torch.randperm(len(val), generator=torch.Generator().manual_seed(REFERENCE_SEED))
    sigma_rows, test_rows = rows[:half].sort().values, rows[half:].sort().values
    res = parzen_evaluate(fake.to(context.device), val.images[sigma_rows], val.images[test_rows], ev.parzen_sigmas,
                          ev.batch_size)
    return {**res, "num_generated": ev.parzen_samples, "num_real": len(test_rows),
            "split": f"val: {len(test_rows)} of {len(val)} at random (seed {REFERENCE_SEED})",
            "sigma_split": f"val: the other {half}",
            "space": f"pixels in [0, 1], {fake.shape[1]}x{fake.shape[2]}x{fake.shape[3]}",
            "resize": context.base.get("real_resize", "none"), "extractor": "none"}


def memorisation_rate(context: Context) -> dict:
    ev = context.evaluator
    res = memorisation(context.fake_features, context.train_features, context.val_features, ev.memorisation_quantile,
                       seed=ev.seed)
    return {**res, **context.on_train, "baseline_split": "val", "space": "features", **context.about}


def neighbours(context: Context) -> dict:
    """Each of the first generated images beside its nearest training images, in pixel and in feature space."""
    ev = context.evaluator
    rows = min(ev.neighbours, context.fake.shape[0])
    res = {**context.on_train, "num_generated": rows, "k": ev.neighbours_k, **context.about}
    pixels = [to_unit(images).to(context.device) for images in (context.fake[:rows], context.train_images)]
    spaces = (("pixel", *pixels), ("feature", context.fake_features[:rows], context.train_features))
    for space, queries, refs in spaces:
        dist, idx = nearest_neighbours(queries, refs, ev.neighbours_k)
        res[f"{space}_distance"] = [round(float(d), 4) for d in dist[:, 0]]
        res[f"{space}_index"] = [int(i) for i in idx[:, 0]]
        if context.out_dir is not None:
            images = neighbour_rows(context.fake[:rows], context.train_images, idx.cpu())
            path = save_grid(images, context.out_dir / f"neighbours_{space}.png", nrow=idx.shape[1] + 1, upscale_to=64)
            res[f"{space}_grid"] = str(path)
    return res


def accuracy(context: Context) -> dict:
    """How often the dataset's classifier recognises the class a conditional generator was asked for."""
    ev, model = context.evaluator, context.model
    num_classes = int(context.datamodule.num_classes)
    if not model.conditional:
        return {"skipped": "the model is not class-conditional"}
    classifier = ev.classifier(context.datamodule, context.device)
    per_class = max(1, ev.num_samples // num_classes)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    images, labels = generate_images(model, labels.numel(), ev.seed, ev.batch_size, labels=labels)
    predicted = extract_all(classifier, images, ev.batch_size, context.device)[1].argmax(1).cpu()
    res = class_accuracy(predicted, labels, list(context.datamodule.class_names))
    return {**res, "num_generated": labels.numel(), "per_class_generated": per_class, "num_real": 0,
            **classifier.describe()}


def scores(context: Context) -> dict:
    """D's verdict on held-out real images and on generated ones, one number per image as the
    variant defines it (``model.d_scores``: a probability of being real, or a critic value)."""
    ev, model, bs = context.evaluator, context.model, context.evaluator.batch_size

    def verdicts(images: Tensor, labels: Tensor) -> Tensor:
        return torch.cat([model.d_scores(to_float(images[i:i + bs].to(context.device)), labels[i:i + bs].to(context.device))
                          .float().cpu() for i in range(0, images.shape[0], bs)])

    real_scores = verdicts(*context.val.sample(ev.num_samples))
    fake_scores = verdicts(context.fake, context.fake_labels)
    res = {"d_real": float(real_scores.mean()), "d_fake": float(fake_scores.mean()),
           "num_real": len(real_scores), "num_generated": len(fake_scores), "split": "val",
           **({"real_chosen": chosen} if (chosen := context.val.chosen(ev.num_samples)) else {}),
           "discriminator_mode": "eval"}
    if context.out_dir is not None:
        probability = getattr(getattr(model, "loss", None), "probability", True)
        xlabel = "D(x): probability of real" if probability else "D(x): critic value"
        res["histogram"] = str(score_histogram(real_scores, fake_scores, context.out_dir / "scores.png", xlabel))
    return res


#: every metric (``compute(context) -> record``) by its name in ``metrics=[...]``, in the order they run and
#: are stored; each scores the first ``num_samples`` generated images, Parzen ``parzen_samples``
REGISTRY: dict[str, Callable[[Context], dict]] = {
    "fid": fid, "kid": kid, "is": inception,
    "precision_recall": lambda c: _manifold(c, precision_recall, c.evaluator.precision_recall_k),
    "density_coverage": lambda c: _manifold(c, density_coverage, c.evaluator.density_coverage_k),
    "parzen": parzen, "memorisation": memorisation_rate,
    "neighbours": neighbours, "accuracy": accuracy, "scores": scores,
}

METRICS = tuple(REGISTRY)

#: log names of the results (``val/<name>``)
LOG_NAMES = {"parzen": "parzen_ll", "accuracy": "class_accuracy"}

#: the fields of a record without one ``value`` that are logged, each as ``val/<field>``
LOGGED_FIELDS = {"precision_recall": ("precision", "recall"), "density_coverage": ("density", "coverage"),
                 "scores": ("d_real", "d_fake")}


def _log_keys(metric: str) -> dict[str, str]:
    """The fields of a metric's record that are logged (per-class accuracies aside), each with its ``val/<name>``."""
    base = f"val/{LOG_NAMES.get(metric, metric)}"
    return {"value": base, "std": f"{base}_std", "stderr": f"{base}_stderr",
            **{field: f"val/{field}" for field in LOGGED_FIELDS.get(metric, ())}}


def loggable_names(metrics: Sequence[str], class_names: Sequence[str] = ()) -> set[str]:
    """Every ``val/<name>`` that :func:`logged_values` can give for an evaluation of ``metrics``."""
    per_class = {f"val/class_accuracy/{c}" for c in class_names} if "accuracy" in metrics else set()
    return {name for metric in metrics for name in _log_keys(metric).values()} | per_class


def logged_values(results: dict[str, dict]) -> dict[str, float]:
    """An evaluation's ``results`` (metric name -> record) as flat ``{"val/<name>": value}`` for the
    loggers: values with ``_std`` / ``_stderr``, :data:`LOGGED_FIELDS` and per-class accuracies."""
    flat = {}
    for metric, res in results.items():
        flat |= {name: float(res[field]) for field, name in _log_keys(metric).items() if field in res}
        flat |= {f"val/class_accuracy/{c}": float(value) for c, value in res.get("per_class", {}).items()}
    return flat
