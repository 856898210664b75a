"""One evaluation of a GAN: the chosen metrics, each stored with the protocol that produced it.

:class:`Evaluator` is what both the training callback and ``python -m gan_lab.evaluate`` run. It
reads images from the DataModule (``dataset(split).images``), draws samples through the module's
public hooks, and returns a record for ``metrics.json`` plus flat ``val/...`` values for the logger.
A record says, for each value: the numbers of real and generated images, the split, the resize
method, the feature extractor's name and weights checksum, and (filled in by the caller) the
checkpoint, epoch and step.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image
from torch import Tensor
from torchvision.utils import make_grid

from gan_lab.errors import UserError
from gan_lab.metrics.classes import class_accuracy
from gan_lab.metrics.features import FeatureExtractor, extract_all, load_extractor
from gan_lab.metrics.fid import frechet_distance, inception_score, kernel_distance
from gan_lab.metrics.neighbours import memorisation, nearest_neighbours, neighbour_rows
from gan_lab.metrics.parzen import DEFAULT_SIGMAS, parzen_evaluate
from gan_lab.metrics.sampling import ema_weights, generate_images, is_conditional
from gan_lab.metrics.scores import score_histogram

log = logging.getLogger(__name__)

METRICS = ("fid", "kid", "is", "parzen", "neighbours", "memorisation", "accuracy", "scores")


def default_cache_dir(datamodule) -> Path:
    """Next to the dataset's cache when the DataModule has a data folder, else the user cache."""
    for attr in ("cache_dir", "root", "data_dir"):
        value = getattr(datamodule, attr, None)
        if isinstance(value, (str, os.PathLike)):
            return Path(value) / "feature_extractors"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gan_lab" / "feature_extractors"


def match_resolution(images: Tensor, size: int) -> Tensor:
    """uint8 images area-downsampled to ``size`` (what a DataModule serves at a lower resolution,
    e.g. while a progressive GAN grows)."""
    if images.shape[-1] == size:
        return images
    x = torch.nn.functional.adaptive_avg_pool2d(images.float(), size)
    return x.round().clamp(0, 255).to(torch.uint8)


def pixel_rows(images: Tensor) -> Tensor:
    """uint8 images -> float rows in [0, 1] (the pixel space of the nearest-neighbour distances)."""
    return images.flatten(1).float().div(255.0)


class _Split:
    """Images and labels of a split, at the generator's resolution."""

    def __init__(self, dataset, size: int) -> None:
        self.images, self.labels = match_resolution(dataset.images, size), dataset.labels

    def __len__(self) -> int:
        return self.images.shape[0]


def save_image_grid(images: Tensor, path: Path, nrow: int, upscale_to: int = 64) -> Path:
    images = images.float().div(127.5).sub(1) if images.dtype == torch.uint8 else images.float()
    if images.shape[-1] < upscale_to:
        images = torch.nn.functional.interpolate(images, size=upscale_to, mode="nearest")
    grid = make_grid(images.cpu(), nrow=nrow, padding=2, normalize=True, value_range=(-1, 1))
    array = grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to(torch.uint8).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).convert("RGB").save(path)
    return path


class Evaluator:
    """Runs the chosen metrics on a GAN module and its DataModule.

    Args:
        metrics: any of ``fid, kid, is, parzen, neighbours, memorisation, accuracy, scores``.
        num_samples: generated images for FID/KID/IS/memorisation/scores (and per-class total for accuracy).
        num_real: cap on real images (FID/KID statistics, memorisation reference).
        real_split: split the generated set is compared with (``train``, the GAN's data).
        parzen_samples: generated images that carry a Parzen kernel (10,000 in the papers).
        parzen_sigmas: bandwidth grid (default ``logspace(-1, 0, 10)``).
        kid_subset_size, kid_subsets: KID subsets (the size is capped by the set sizes).
        is_splits: Inception Score splits.
        neighbours, neighbours_k: rows and neighbours per row of the nearest-neighbour grids.
        memorisation_quantile: quantile of train-to-train nearest distances used as threshold.
        extractor: ``kind`` (auto | inception | domain), ``input_size``, ``steps``,
            ``inception_weights`` and ``cache_dir`` (default: next to the data, else the user cache).
        batch_size: images per forward pass.
        seed: seed of the sampled latents and labels (same seed, same images).
        ema: sample from ``generator_ema`` when the module has one.
    """

    def __init__(self, metrics: Sequence[str] = ("fid", "kid", "is"), num_samples: int = 10000,
                 num_real: int = 10000, real_split: str = "train", parzen_samples: int = 10000,
                 parzen_sigmas: Sequence[float] | None = None, kid_subset_size: int = 1000,
                 kid_subsets: int = 100, is_splits: int = 10, neighbours: int = 8, neighbours_k: int = 5,
                 memorisation_quantile: float = 0.5, extractor: dict | None = None, batch_size: int = 256,
                 seed: int = 0, ema: bool = True) -> None:
        metrics = [str(m) for m in metrics]
        unknown = sorted(set(metrics) - set(METRICS))
        if unknown:
            raise UserError(f"metrics={unknown} unknown; choose from {', '.join(METRICS)}.")
        if num_samples < 2:
            raise UserError(f"num_samples={num_samples} must be >= 2 for any metric; e.g. num_samples=1000.")
        self.metrics = metrics
        self.num_samples, self.num_real, self.real_split = int(num_samples), int(num_real), real_split
        self.parzen_samples = int(parzen_samples)
        self.parzen_sigmas = tuple(float(s) for s in (parzen_sigmas or DEFAULT_SIGMAS))
        self.kid_subset_size, self.kid_subsets, self.is_splits = int(kid_subset_size), int(kid_subsets), int(is_splits)
        self.neighbours, self.neighbours_k = int(neighbours), int(neighbours_k)
        self.memorisation_quantile = float(memorisation_quantile)
        self.extractor_cfg = dict(extractor or {})
        self.batch_size, self.seed, self.ema = int(batch_size), int(seed), bool(ema)
        self._extractors: dict[str, FeatureExtractor] = {}
        self._real_features: dict[tuple, Tensor] = {}

    # --- feature extractors --------------------------------------------------------------

    def extractor(self, datamodule, device, kind: str | None = None) -> FeatureExtractor:
        cfg = dict(self.extractor_cfg)
        kind = kind or cfg.pop("kind", "auto")
        cfg.pop("kind", None)
        if kind not in self._extractors:
            train, val = datamodule.dataset("train"), datamodule.dataset("val")
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
        if main.num_classes == int(datamodule.num_classes):
            return main
        return self.extractor(datamodule, device, kind="domain")

    def extract(self, extractor: FeatureExtractor, images: Tensor, device) -> tuple[Tensor, Tensor | None]:
        """Features and logits of generated images: one pass, shared by every metric."""
        return extract_all(extractor, images, self.batch_size, device)

    def real_features(self, extractor: FeatureExtractor, datamodule, split: str, images: Tensor, device) -> Tensor:
        """Features of ``images`` of a real split, extracted once per evaluator (a training run evaluates
        every few epochs against the same images); keyed by extractor, the split's storage and the
        images' shape (a growing generator's resolution)."""
        source = datamodule.dataset(split).images
        key = (extractor.name, extractor.checksum, split, source.data_ptr(), tuple(images.shape))
        if key not in self._real_features:  # kept in host memory: a growing model adds a size per resolution
            self._real_features[key] = extract_all(extractor, images, self.batch_size, device)[0].cpu()
        return self._real_features[key].to(device)

    # --- the evaluation ------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, model, datamodule, out_dir: str | Path | None = None) -> tuple[dict, dict[str, float]]:
        """Run the metrics; returns (record for ``metrics.json``, ``{"val/<name>": value}``).

        Pictures (nearest-neighbour grids, score histogram) go to ``out_dir`` when given.
        """
        start = time.time()
        device = model.device
        out_dir = Path(out_dir) if out_dir is not None else None
        was_training = model.training
        model.eval()
        try:
            with ema_weights(model, self.ema) as weights:
                results = self._run(model, datamodule, device, out_dir)
        finally:
            model.train(was_training)
        record = {"generator_weights": weights, "seed": self.seed, "device": str(device),
                  "seconds": round(time.time() - start, 2), "results": results}
        flat = {}
        for name, res in results.items():
            if "value" in res:
                flat[f"val/{LOG_NAMES.get(name, name)}"] = float(res["value"])
            for extra in ("std", "stderr"):
                if extra in res:
                    flat[f"val/{LOG_NAMES.get(name, name)}_{extra}"] = float(res[extra])
            if name == "scores":
                flat["val/d_real"], flat["val/d_fake"] = res["d_real"], res["d_fake"]
            for class_name, value in res.get("per_class", {}).items():
                flat[f"val/class_accuracy/{class_name}"] = float(value)
        return record, flat

    def _run(self, model, datamodule, device, out_dir: Path | None) -> dict:
        chosen = set(self.metrics)
        results: dict[str, dict] = {}
        n_gen = self.num_samples
        n_total = max(n_gen, self.parzen_samples if "parzen" in chosen else 0)
        fake, fake_labels = generate_images(model, n_total, self.seed, self.batch_size)
        fake_main = fake[:n_gen]
        size = fake.shape[-1]
        real = _Split(datamodule.dataset(self.real_split), size)
        val = _Split(datamodule.dataset("val"), size)
        real_images = real.images[:self.num_real]
        base = {"num_generated": n_gen, "split": self.real_split, "image_size": size}
        if size != datamodule.dataset("val").images.shape[-1]:
            base["real_resize"] = f"area to {size}px"

        needs_features = chosen & {"fid", "kid", "is", "memorisation", "neighbours"}
        extractor = self.extractor(datamodule, device) if needs_features else None
        about = extractor.describe() if extractor is not None else {}
        if needs_features:
            fake_features, fake_logits = self.extract(extractor, fake_main, device)
        if chosen & {"fid", "kid", "memorisation", "neighbours"}:
            train_features = self.real_features(extractor, datamodule, self.real_split, real_images, device)
        if "fid" in chosen:
            value = frechet_distance(train_features, fake_features)
            results["fid"] = {"value": value, **base, "num_real": len(real_images), **about}
        if "kid" in chosen:
            size = min(self.kid_subset_size, len(real_images), n_gen)
            mean, std = kernel_distance(train_features, fake_features, size, self.kid_subsets, self.seed)
            results["kid"] = {"value": mean, "std": std, **base, "num_real": len(real_images),
                              "subset_size": size, "subsets": self.kid_subsets, **about}
        if "is" in chosen:
            scorer = extractor if extractor.num_classes else self.classifier(datamodule, device)
            if scorer is None:
                results["is"] = {"skipped": "unlabelled data and no Inception weights: no classifier for IS"}
            else:
                logits = fake_logits if scorer is extractor else self.extract(scorer, fake_main, device)[1]
                mean, std = inception_score(logits, self.is_splits, self.seed)
                results["is"] = {"value": mean, "std": std, "num_generated": n_gen,
                                 "splits": self.is_splits, "num_real": 0, **scorer.describe()}
        if "parzen" in chosen:
            half = len(val) // 2
            if half < 2:
                results["parzen"] = {"skipped": f"the val split has {len(val)} images; need >= 4"}
            else:
                res = parzen_evaluate(fake[:self.parzen_samples].to(device), val.images[:half],
                                      val.images[half:], self.parzen_sigmas, self.batch_size)
                results["parzen"] = {**res, "num_generated": self.parzen_samples, "num_real": len(val) - half,
                                     "split": f"val[{half}:{len(val)}]", "sigma_split": f"val[0:{half}]",
                                     "space": f"pixels in [0, 1], {fake.shape[1]}x{fake.shape[2]}x{fake.shape[3]}",
                                     "resize": base.get("real_resize", "none"), "extractor": "none"}
        if chosen & {"memorisation", "neighbours"}:
            if "memorisation" in chosen:
                val_features = self.real_features(extractor, datamodule, "val", val.images[:self.num_real], device)
                res = memorisation(fake_features, train_features, val_features, self.memorisation_quantile,
                                   seed=self.seed)
                results["memorisation"] = {**res, **base, "num_real": len(real_images),
                                           "baseline_split": "val", "space": "features", **about}
            if "neighbours" in chosen:
                results["neighbours"] = self._neighbours(fake_main, real_images, fake_features,
                                                         train_features, device, out_dir, about)
        if "accuracy" in chosen:
            results["accuracy"] = self._accuracy(model, datamodule, device)
        if "scores" in chosen:
            results["scores"] = self._scores(model, val, fake_main, fake_labels[:n_gen], device, out_dir)
        return results

    def _neighbours(self, fake, real_images, fake_features, train_features, device, out_dir, about) -> dict:
        rows = min(self.neighbours, fake.shape[0])
        res = {"num_generated": rows, "k": self.neighbours_k, "split": self.real_split,
               "num_real": len(real_images), **about}
        for space, queries, refs in (("pixel", pixel_rows(fake[:rows]).to(device), pixel_rows(real_images).to(device)),
                                     ("feature", fake_features[:rows], train_features)):
            dist, idx = nearest_neighbours(queries, refs, self.neighbours_k)
            res[f"{space}_distance"] = [round(float(d), 4) for d in dist[:, 0]]
            res[f"{space}_index"] = [int(i) for i in idx[:, 0]]
            if out_dir is not None:
                images = neighbour_rows(fake[:rows], real_images, idx.cpu())
                path = save_image_grid(images, out_dir / f"neighbours_{space}.png", nrow=idx.shape[1] + 1)
                res[f"{space}_grid"] = str(path)
        return res

    def _accuracy(self, model, datamodule, device) -> dict:
        num_classes = int(datamodule.num_classes)
        if not is_conditional(model, num_classes, self.seed):
            return {"skipped": "the model is not class-conditional"}
        classifier = self.classifier(datamodule, device)
        per_class = max(1, self.num_samples // num_classes)
        labels = torch.arange(num_classes).repeat_interleave(per_class)
        images, labels = generate_images(model, labels.numel(), self.seed, self.batch_size, labels=labels)
        predicted = torch.cat([classifier.logits(images[i:i + self.batch_size].to(device)).argmax(1).cpu()
                               for i in range(0, images.shape[0], self.batch_size)])
        res = class_accuracy(predicted, labels, list(datamodule.class_names))
        return {**res, "num_generated": labels.numel(), "per_class_generated": per_class, "num_real": 0,
                **classifier.describe()}

    def _scores(self, model, val, fake, fake_labels, device, out_dir) -> dict:
        """D's verdict on held-out real images and on generated ones, one number per image as the
        variant defines it (``model.d_scores``: a probability of being real, or a critic value)."""
        def scores(images, labels):
            return torch.cat([model.d_scores(images[i:i + self.batch_size].to(device).float().div(127.5).sub(1),
                                             labels[i:i + self.batch_size].to(device)).float().cpu()
                              for i in range(0, images.shape[0], self.batch_size)])
        real_scores = scores(val.images[:self.num_samples], val.labels[:self.num_samples])
        fake_scores = scores(fake, fake_labels)
        probability = bool(getattr(getattr(model, "loss", None), "probability", True))
        res = {"d_real": float(real_scores.mean()), "d_fake": float(fake_scores.mean()),
               "num_real": len(real_scores), "num_generated": len(fake_scores), "split": "val",
               "discriminator_mode": "eval"}
        if out_dir is not None:
            xlabel = "D(x): probability of real" if probability else "D(x): critic value"
            res["histogram"] = str(score_histogram(real_scores, fake_scores, out_dir / "scores.png", xlabel))
        return res


#: log names of the results (``val/<name>``)
LOG_NAMES = {"parzen": "parzen_ll", "accuracy": "class_accuracy"}
