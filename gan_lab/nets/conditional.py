"""Label-conditioned generators and discriminators: the MLP cGAN and the conditional DCGAN.

Every net here takes the class labels (int64 ``[N]``) as a second forward argument:
``generator(z, labels) -> images`` and ``discriminator(images, labels) -> logits [N]``.

* MLP cGAN (Mirza & Osindero 2014, the course's MNIST model): the label is one-hot encoded (or
  embedded) and concatenated to the latent of G and to the flattened image of D.
* Conditional DCGAN: the one-hot label is concatenated to G's latent (``latent_dim + num_classes``
  input channels of the first transposed conv) and, as constant one-hot maps, to D's input
  (``channels + num_classes`` input channels); the rest are the DCGAN blocks of
  :mod:`gan_lab.nets.dcgan`.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from gan_lab.errors import UserError
from gan_lab.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from gan_lab.nets.init import dcgan_init

LABEL_ENCODINGS = ("one_hot", "embedding")


def check_num_classes(num_classes: int, net: str) -> int:
    """Conditional nets need at least two classes; a clear error names the fix."""
    if int(num_classes) != num_classes or num_classes < 2:
        raise UserError(f"num_classes={num_classes}: the {net} is conditioned on class labels and needs a "
                        f"labelled dataset with at least 2 classes (e.g. data=digits), or use an "
                        f"unconditional model such as model=dcgan.")
    return int(num_classes)


def class_codes(labels: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """int64 labels ``[N]`` -> one-hot ``[N, K]``; float class weights ``[N, K]`` (a blend of classes,
    e.g. ``0.3 * one_hot(a) + 0.7 * one_hot(b)``) are used as they are."""
    if labels.is_floating_point():
        if labels.dim() != 2 or labels.shape[1] != num_classes:
            raise ValueError(f"class weights must have shape [N, {num_classes}], got {list(labels.shape)}")
        return labels.to(dtype)
    return F.one_hot(labels, num_classes).to(dtype)


class LabelEncoder(nn.Module):
    """int64 labels ``[N]`` (or class weights ``[N, K]``, see :func:`class_codes`) -> float codes
    ``[N, dim]``: a fixed one-hot or a learned embedding (a weighted mean of class embeddings)."""

    def __init__(self, num_classes: int, encoding: str = "one_hot", embedding_dim: int = 10) -> None:
        super().__init__()
        if encoding not in LABEL_ENCODINGS:
            raise UserError(f"label_encoding={encoding!r} is unknown; use one of {', '.join(LABEL_ENCODINGS)}.")
        self.num_classes, self.encoding = num_classes, encoding
        self.embedding = nn.Embedding(num_classes, embedding_dim) if encoding == "embedding" else None
        self.dim = embedding_dim if encoding == "embedding" else num_classes

    def forward(self, labels: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        if self.embedding is not None:
            if labels.is_floating_point():
                return (class_codes(labels, self.num_classes, self.embedding.weight.dtype)
                        @ self.embedding.weight).to(dtype)
            return self.embedding(labels).to(dtype)
        return class_codes(labels, self.num_classes, dtype)


def _mlp(sizes: Sequence[int], activation: nn.Module, norm: bool, dropout: float) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if norm and i > 0:
            layers.append(nn.BatchNorm1d(b))
        layers.append(activation)
        if dropout:
            layers.append(nn.Dropout(dropout))
    return layers


class MLPConditionalGenerator(nn.Module):
    """(z, label) -> image: dense layers on ``[z, code(label)]``, tanh output reshaped to an image.

    Args:
        hidden: widths of the hidden dense layers (the course's MNIST model: 256, 512, 1024).
        label_encoding: ``one_hot`` (concatenated as is) or ``embedding`` (learned, ``embedding_dim``).
        norm: BatchNorm1d after every hidden layer but the first.
    """

    def __init__(self, latent_dim: int, num_classes: int, image_size: int = 28, channels: int = 1,
                 hidden: Sequence[int] = (256, 512, 1024), label_encoding: str = "one_hot",
                 embedding_dim: int = 10, norm: bool = True, init: bool = True) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes, "MLP cGAN generator")
        self.latent_dim, self.image_size, self.channels = latent_dim, image_size, channels
        self.label = LabelEncoder(self.num_classes, label_encoding, embedding_dim)
        out = channels * image_size * image_size
        self.net = nn.Sequential(*_mlp([latent_dim + self.label.dim, *hidden], nn.LeakyReLU(0.2, True), norm, 0.0),
                                 nn.Linear(hidden[-1], out), nn.Tanh())
        if init:
            self.apply(dcgan_init)

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        h = torch.cat([z.flatten(1), self.label(labels, z.dtype)], 1)
        return self.net(h).view(z.shape[0], self.channels, self.image_size, self.image_size)


class MLPConditionalDiscriminator(nn.Module):
    """(image, label) -> logit ``[N]``: dense layers on ``[flat image, code(label)]``, dropout after each."""

    def __init__(self, num_classes: int, image_size: int = 28, channels: int = 1,
                 hidden: Sequence[int] = (1024, 512, 256), label_encoding: str = "one_hot",
                 embedding_dim: int = 10, dropout: float = 0.3, init: bool = True) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes, "MLP cGAN discriminator")
        if not 0.0 <= dropout < 1.0:
            raise UserError(f"model.discriminator.dropout={dropout} must be in [0, 1); e.g. 0.3.")
        self.image_size, self.channels = image_size, channels
        self.label = LabelEncoder(self.num_classes, label_encoding, embedding_dim)
        inp = channels * image_size * image_size + self.label.dim
        self.net = nn.Sequential(*_mlp([inp, *hidden], nn.LeakyReLU(0.2, True), False, dropout),
                                 nn.Linear(hidden[-1], 1))
        if init:
            self.apply(dcgan_init)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        h = torch.cat([x.flatten(1), self.label(labels, x.dtype)], 1)
        return self.net(h).view(x.shape[0])


class ConditionalDCGANGenerator(nn.Module):
    """(z, label) -> image: a :class:`DCGANGenerator` whose latent is ``[z, one_hot(label)]``."""

    def __init__(self, latent_dim: int, num_classes: int, image_size: int = 64, channels: int = 3,
                 width: int = 64, max_mult: int = 8, norm: str = "batch", init: bool = True) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes, "conditional DCGAN generator")
        self.latent_dim, self.image_size, self.channels = latent_dim, image_size, channels
        self.dcgan = DCGANGenerator(latent_dim + self.num_classes, image_size, channels, width, max_mult,
                                    norm, init)

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        return self.dcgan(torch.cat([z.flatten(1), class_codes(labels, self.num_classes, z.dtype)], 1))


class ConditionalDCGANDiscriminator(nn.Module):
    """(image, label) -> logit ``[N]``: a :class:`DCGANDiscriminator` on the image stacked with
    ``num_classes`` constant maps holding the one-hot label."""

    def __init__(self, num_classes: int, image_size: int = 64, channels: int = 3, width: int = 64,
                 max_mult: int = 8, norm: str = "batch", spectral_norm: bool = False, dropout: float = 0.0,
                 init: bool = True) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes, "conditional DCGAN discriminator")
        self.image_size, self.channels = image_size, channels
        self.dcgan = DCGANDiscriminator(image_size, channels + self.num_classes, width, max_mult, norm,
                                        spectral_norm, dropout, init)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        n, _, h, w = x.shape
        maps = F.one_hot(labels, self.num_classes).to(x.dtype)[:, :, None, None].expand(n, -1, h, w)
        return self.dcgan(torch.cat([x, maps], 1))
