"""Feature extractors for the metrics: torch-fidelity's Inception-v3 when its weights are on disk (nothing downloads),
else a small CNN classifier (auto-encoder for unlabelled data) trained once on the training split and cached.
Each has a ``name`` and a weights ``checksum``, stored in every metric record."""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
import logging
import os
import time
from functools import cached_property
from pathlib import Path
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from gan_lab.errors import UserError
from gan_lab.fs import atomic_torch_save, remove_orphan_temp_files, zip_damage
from gan_lab.metrics.sampling import seeded
from gan_lab.pixels import to_float, to_uint8

log = logging.getLogger(__name__)

#: torch-fidelity's FID Inception-v3 weights, and their file name in ``<torch hub dir>/checkpoints/``
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")
INCEPTION_FILE = INCEPTION_URL.rsplit("/", 1)[1]
#: bump when the domain networks or their training change, so old caches are not reused
DOMAIN_VERSION = 2


def sha256_of(chunks: Iterable[bytes | Tensor], digits: int) -> str:
    """The first ``digits`` hex digits of the SHA-256 of ``chunks`` (bytes, or tensors' raw data), in order."""
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk.detach().cpu().contiguous().numpy().tobytes() if isinstance(chunk, Tensor) else chunk)
    return h.hexdigest()[:digits]


def weights_checksum(module: nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of a module's parameters and buffers, in state-dict order."""
    return sha256_of((x for key, value in module.state_dict().items() for x in (key.encode(), value)), 16)


class FeatureExtractor(nn.Module, ABC):
    """``images -> features [N, num_features]``; ``logits`` gives class logits when there is a
    classifier head (``None`` otherwise). Always in eval mode; inputs uint8 or float in [-1, 1]."""

    name: str = "extractor"
    num_features: int = 0
    num_classes: int = 0  # classes of the logits head (0: no head)
    resize: str = "none"
    quality: dict = {}  # held-out accuracy (classifier) or reconstruction error (auto-encoder)

    @abstractmethod
    def forward(self, images: Tensor) -> Tensor:
        """Features ``[N, num_features]`` of uint8 or float [-1, 1] images."""

    def train(self, mode: bool = True) -> "FeatureExtractor":
        return super().train(False)

    def logits(self, images: Tensor) -> Tensor | None:
        return self.extract(images)[1]

    def extract(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """Features and class logits (``None`` without a head) of one batch, in one pass."""
        return self(images), None

    @cached_property
    def checksum(self) -> str:
        return weights_checksum(self)

    def describe(self) -> dict:
        """What a metric record stores about the extractor."""
        return {"extractor": self.name, "extractor_checksum": self.checksum, "resize": self.resize,
                **{f"extractor_{k}": v for k, v in self.quality.items()}}


class _DomainNet(FeatureExtractor):
    """A small CNN trained on the dataset; its trunk gives the features: 32x32 -> ``num_features`` through three
    strided convolutions, one more at 4x4, and global average pooling."""

    def __init__(self, channels: int, input_size: int, num_features: int, name: str) -> None:
        super().__init__()
        blocks = ((channels, 16, 2), (16, 32, 2), (32, 64, 2), (64, num_features, 1))  # in, out, stride
        self.trunk = nn.Sequential(*[layer for cin, cout, stride in blocks for layer in (
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2))],
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.input_size, self.num_features, self.name = int(input_size), int(num_features), name
        self.resize = f"bilinear-antialias to {input_size}px"

    def prepare(self, images: Tensor) -> Tensor:
        x = to_float(images)
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", antialias=True, align_corners=False)
        return x

    def forward(self, images: Tensor) -> Tensor:
        return self.trunk(self.prepare(images))


class DomainClassifier(_DomainNet):
    """A small CNN classifier of the dataset's classes; its penultimate layer gives the features."""

    def __init__(self, channels: int, num_classes: int, input_size: int = 32, num_features: int = 64,
                 name: str = "classifier") -> None:
        super().__init__(channels, input_size, num_features, name)
        self.head = nn.Linear(num_features, num_classes)
        self.num_classes = int(num_classes)

    def extract(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = self(images)
        return features, self.head(features)


class DomainAutoencoder(_DomainNet):
    """Encoder features of an auto-encoder trained to reconstruct the (unlabelled) training images."""

    def __init__(self, channels: int, input_size: int = 32, num_features: int = 64,
                 name: str = "autoencoder") -> None:
        if input_size != 32:
            raise UserError(f"an auto-encoder feature extractor works at 32px, not input_size={input_size}; "
                            f"set metrics extractor input_size=32.")
        super().__init__(channels, 32, num_features, name)
        self.decoder = nn.Sequential(
            nn.Linear(num_features, 64 * 4 * 4), nn.Unflatten(1, (64, 4, 4)), nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.BatchNorm2d(32), nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.BatchNorm2d(16), nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(16, channels, 4, 2, 1), nn.Tanh())

    def reconstruct(self, images: Tensor) -> Tensor:
        return self.decoder(self(images))


class InceptionExtractor(FeatureExtractor):
    """torch-fidelity's FID Inception-v3 from a weights file: 2048 pool features and 1008 unbiased IS logits
    in one pass, inputs resized to 299px."""

    name, num_features, num_classes = "inception-v3-compat", 2048, 1008
    resize = "torch-fidelity bilinear (TF1-compatible) to 299px"

    def __init__(self, weights_path: str | Path) -> None:
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        path = str(weights_path)
        try:
            self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                                   feature_extractor_weights_path=path)
        except Exception as exc:  # a truncated download, another network's weights, ...
            raise UserError(f"inception_weights={path} is not torch-fidelity's Inception-v3 weights file "
                            f"({INCEPTION_FILE}): {type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0].rstrip('.')}; "
                            f"replace it or use kind=domain.") from None
        with open(path, "rb") as fh:
            self.checksum = hashlib.file_digest(fh, "sha256").hexdigest()[:16]

    def extract(self, images: Tensor) -> tuple[Tensor, Tensor]:
        x = to_uint8(images)
        return self.net(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x)  # ("2048", "logits_unbiased") in one pass

    def forward(self, images: Tensor) -> Tensor:
        return self.extract(images)[0]


@torch.no_grad()
def extract_all(extractor: FeatureExtractor, images: Tensor, batch_size: int,
                device: str | torch.device) -> tuple[Tensor, Tensor | None]:
    """Features ``[N, num_features]`` and logits ``[N, num_classes]`` (``None`` without a head), batched on device."""
    features, logits = zip(*(extractor.extract(images[i:i + batch_size].to(device))
                             for i in range(0, images.shape[0], batch_size)))
    return torch.cat(features), None if logits[0] is None else torch.cat(logits)


def find_inception_weights(configured: str | None = None) -> Path | None:
    """The FID Inception weights if they are on disk and usable (torch-fidelity installed)."""
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        if configured:
            raise UserError(f"inception_weights={configured} needs torch-fidelity; install it with "
                            f"`pip install torch-fidelity` or set inception_weights=null.") from None
        return None
    if configured:
        if not Path(configured).is_file():
            raise UserError(f"inception_weights={configured} does not exist; point it at "
                            f"{INCEPTION_FILE} or set inception_weights=null.")
        return Path(configured)
    folders = (Path(torch.hub.get_dir()) / "checkpoints",
               Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "torch" / "hub" / "checkpoints")
    return next((folder / INCEPTION_FILE for folder in folders if (folder / INCEPTION_FILE).is_file()), None)


def domain_net(channels: int, num_classes: int, input_size: int, name: str) -> FeatureExtractor:
    """A classifier of ``num_classes > 1`` classes, else an auto-encoder (untrained)."""
    if num_classes > 1:
        return DomainClassifier(channels, num_classes, input_size, name=name)
    return DomainAutoencoder(channels, input_size, name=name)


def train_domain_extractor(train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor], num_classes: int,
                           name: str, input_size: int = 32, steps: int = 300, batch_size: int = 64,
                           lr: float = 2e-3, seed: int = 0, device: str | torch.device = "cpu") -> FeatureExtractor:
    """Train a classifier (``num_classes > 1``) or an auto-encoder on uint8 images; measure it on ``val``."""
    images, labels = train
    with seeded(seed, device), torch.enable_grad():  # callers may run under no_grad
        net = domain_net(images.shape[1], num_classes, input_size, name).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
        g = torch.Generator().manual_seed(seed)
        start = time.time()
        nn.Module.train(net, True)  # FeatureExtractor.train pins eval mode; training needs BatchNorm batch stats
        for _ in range(steps):
            idx = torch.randint(0, images.shape[0], (min(batch_size, images.shape[0]),), generator=g)
            x = images[idx].to(device)
            if num_classes > 1:
                loss = F.cross_entropy(net.logits(x), labels[idx].to(device))
            else:
                loss = F.mse_loss(net.reconstruct(x), net.prepare(x))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    net.eval().requires_grad_(False)
    net.quality = {**evaluate_extractor(net, val, device), "train_steps": steps}
    log.info("trained feature extractor %s in %.1f s: %s", name, time.time() - start, net.quality)
    return net


@torch.no_grad()
def evaluate_extractor(net: FeatureExtractor, val: tuple[Tensor, Tensor], device, batch_size: int = 512) -> dict:
    """Held-out accuracy of a classifier, or mean squared reconstruction error of an auto-encoder."""
    images, labels = val
    autoencoder, total, n = isinstance(net, DomainAutoencoder), 0, images.shape[0]
    for i in range(0, n, batch_size):
        x, y = images[i:i + batch_size].to(device), labels[i:i + batch_size].to(device)
        if autoencoder:  # squared error per image, summed
            total += F.mse_loss(net.reconstruct(x), net.prepare(x), reduction="sum").item() / x[0].numel()
        else:  # correct predictions
            total += (net.logits(x).argmax(1) == y).sum().item()
    return {"val_mse": round(total / max(n, 1), 6)} if autoencoder else {"val_accuracy": round(total / max(n, 1), 4)}


def load_cached_extractor(net: FeatureExtractor, path: Path) -> str | None:
    """Load the cached weights at ``path`` into ``net`` after checking zip CRCs, keys, shapes, dtypes, finite
    values and the quality record; returns what is wrong with the file, or ``None``."""
    if (damage := zip_damage(path)) is not None:
        return damage
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged cache is trained again, never trusted
        return f"it cannot be loaded: {type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
    if not isinstance(state, dict) or set(state) != {"state_dict", "quality"} or not isinstance(state["quality"], dict):
        found = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
        return f"it holds {found}, not the keys ['quality', 'state_dict']"
    weights, own = state["state_dict"], net.state_dict()
    if not isinstance(weights, dict) or set(weights) != set(own):
        return "its weights are not those of this network"
    for key, value in own.items():
        stored = weights[key]
        if not isinstance(stored, Tensor) or stored.shape != value.shape or stored.dtype != value.dtype:
            return (f"its weight {key} is {getattr(stored, 'dtype', type(stored).__name__)} "
                    f"{list(getattr(stored, 'shape', []))}, not {value.dtype} {list(value.shape)}")
        if stored.is_floating_point() and not bool(torch.isfinite(stored).all()):
            return f"its weight {key} holds NaN or Inf"
    net.load_state_dict(weights)
    net.quality = state["quality"]
    return None


def load_extractor(dataset: str, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor], num_classes: int,
                   cache_dir: str | Path, kind: str = "auto", inception_weights: str | None = None,
                   input_size: int = 32, steps: int = 300, seed: int = 0,
                   device: str | torch.device = "cpu") -> FeatureExtractor:
    """The extractor for a dataset (``kind``: auto | inception | domain): Inception when asked for (or found, with
    auto), else the domain extractor cached in ``cache_dir`` (named after ``dataset``), trained on first use or when
    damaged. ``train``, ``val``: uint8 images and int64 labels; ``num_classes`` 1 gives an auto-encoder."""
    if kind not in ("auto", "inception", "domain"):
        raise UserError(f"extractor kind={kind} is not one of auto, inception, domain.")
    if kind in ("auto", "inception"):
        if (path := find_inception_weights(inception_weights)) is not None:
            return InceptionExtractor(path).to(device)
        if kind == "inception":
            raise UserError(f"kind=inception needs the FID Inception weights {INCEPTION_FILE} in "
                            f"{Path(torch.hub.get_dir()) / 'checkpoints'} or at inception_weights=<path>, and they "
                            f"were not found; download them from {INCEPTION_URL} or use kind=domain.")
    what = "classifier" if num_classes > 1 else "autoencoder"
    # a key that changes whenever the training data or the extractor recipe changes
    key = sha256_of((train[0], train[1], repr((DOMAIN_VERSION, what, input_size, steps, seed)).encode()), 12)
    name = f"{what}-{dataset}-{train[0].shape[-1]}px-{key}"
    path = Path(cache_dir) / f"{name}.pt"
    remove_orphan_temp_files(cache_dir, (".pt",))
    if path.is_file():
        with torch.random.fork_rng(devices=[]):  # the (overwritten) initial weights leave the caller's RNG alone
            net = domain_net(train[0].shape[1], num_classes, input_size, name)
        damage = load_cached_extractor(net, path)
        if damage is None:
            return net.requires_grad_(False).eval().to(device)
        log.warning("feature extractor cache %s is damaged (%s); training it again", path, damage)
    net = train_domain_extractor(train, val, num_classes, name, input_size, steps, seed=seed, device=device)
    atomic_torch_save({"state_dict": {k: v.cpu() for k, v in net.state_dict().items()}, "quality": net.quality},
                      path)
    return net
