"""Label-conditioned nets, the MLP cGAN (Mirza & Osindero 2014) and the conditional DCGAN: ``generator(z, labels)``
and ``discriminator(images, labels) -> logits [N]``, labels int64 ``[N]`` or class weights ``[N, K]``.
``conditioning``: ``concat`` (label joined to the input) or ``branch`` (first layer split: :class:`LabelBranch`)."""
from __future__ import annotations

from typing import Annotated, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from gan_lab.constraints import Count
from gan_lab.errors import UserError
from gan_lab.nets.dcgan import DCGANDiscriminator, DCGANGenerator, DropoutRate
from gan_lab.nets.init import dcgan_init

#: the widths of an MLP's hidden dense layers, at least one
Hidden = Annotated[Sequence[Count], Field(min_length=1)]

LABEL_ENCODINGS = ("one_hot", "embedding")
CONDITIONINGS = ("concat", "branch")
ACTIVATIONS = {"leaky_relu": lambda: nn.LeakyReLU(0.2, True), "relu": lambda: nn.ReLU(True)}


def check_num_classes(num_classes: int, net: str) -> int:
    """``num_classes`` as an int; raises UserError unless it is an integer >= 2."""
    if int(num_classes) != num_classes or num_classes < 2:
        raise UserError(f"num_classes={num_classes}: the {net} is conditioned on class labels and needs a "
                        f"labelled dataset with at least 2 classes (e.g. data=digits), or use an "
                        f"unconditional model such as model=dcgan.")
    return int(num_classes)


def class_codes(labels: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """int64 labels ``[N]`` -> one-hot ``[N, K]`` in ``dtype``; float class weights ``[N, K]`` (a blend of classes,
    e.g. ``0.3 * one_hot(a) + 0.7 * one_hot(b)``) are only cast."""
    if labels.is_floating_point():
        if labels.dim() != 2 or labels.shape[1] != num_classes:
            raise ValueError(f"class weights must have shape [N, {num_classes}], got {list(labels.shape)}")
        return labels.to(dtype)
    return F.one_hot(labels, num_classes).to(dtype)


class LabelEncoder(nn.Module):
    """Labels ``[N]`` or class weights ``[N, K]`` -> codes ``[N, dim]``: a fixed one-hot or a learned embedding
    (class weights give the weighted mean of class embeddings)."""

    def __init__(self, num_classes: int, encoding: str = "one_hot", embedding_dim: int | None = None,
                 key: str = "model.generator.embedding_dim") -> None:
        super().__init__()
        if encoding not in LABEL_ENCODINGS:
            raise UserError(f"label_encoding={encoding!r} is unknown; use one of {', '.join(LABEL_ENCODINGS)}.")
        if encoding == "one_hot" and embedding_dim is not None:
            raise UserError(f"{key}={embedding_dim} has no effect with label_encoding=one_hot (the code is the "
                            f"one-hot itself); set model.generator.label_encoding=embedding or {key}=null.")
        self.num_classes = num_classes
        self.embedding = (nn.Embedding(num_classes, 10 if embedding_dim is None else int(embedding_dim))
                          if encoding == "embedding" else None)
        self.dim = num_classes if self.embedding is None else self.embedding.embedding_dim

    def forward(self, labels: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        if self.embedding is not None:
            if labels.is_floating_point():
                return (class_codes(labels, self.num_classes, self.embedding.weight.dtype)
                        @ self.embedding.weight).to(dtype)
            return self.embedding(labels).to(dtype)
        return class_codes(labels, self.num_classes, dtype)


class LabelBranch(nn.Module):
    """First layer of a ``conditioning=branch`` net: ``[input, code]`` (joined on dim 1) ->
    ``[input_layer(input), label_layer(code)]``."""

    def __init__(self, input_layer: nn.Module, label_layer: nn.Module, split: int) -> None:
        super().__init__()
        self.input_layer, self.label_layer, self.split = input_layer, label_layer, int(split)

    def forward(self, h: Tensor) -> Tensor:
        return torch.cat([self.input_layer(h[:, :self.split]), self.label_layer(h[:, self.split:])], 1)


def check_conditioning(conditioning: str, branch: int | None, key: str, first: int) -> int | None:
    """Validate ``conditioning`` and the label branch's width ``branch`` (config key ``key``) against the first
    layer's ``first`` outputs; returns the width: ``None`` for concat, ``first // 2`` when not given."""
    net = key.rsplit(".", 1)[0]
    if conditioning not in CONDITIONINGS:
        raise UserError(f"{net}.conditioning={conditioning!r} is unknown; use one of {', '.join(CONDITIONINGS)}.")
    if conditioning == "concat":
        if branch is not None:
            raise UserError(f"{key}={branch} only applies with conditioning=branch; set "
                            f"{net}.conditioning=branch or {key}=null.")
        return None
    if branch is None:
        branch = first // 2
    if int(branch) != branch or not 0 < branch < first:
        raise UserError(f"{key}={branch} must be an integer from 1 to {first - 1}, since the label branch takes "
                        f"that many of the {first} outputs of the first layer and the input branch the rest; "
                        f"e.g. {key}={max(1, first // 2)}.")
    return int(branch)


def split_first_layer(net: nn.Module, kind: type[nn.Module], input_dim: int, label_out: int,
                      wrap: Callable[[nn.Module], nn.Module] = lambda m: m) -> LabelBranch:
    """Replace the first ``kind`` layer of ``net`` by a :class:`LabelBranch` of the same kernel, stride, padding
    and bias, and return it: ``input_dim`` inputs go to ``out - label_out`` outputs, the rest to ``label_out``.
    ``wrap`` re-applies e.g. spectral norm."""
    name, layer = next((n, m) for n, m in net.named_modules() if isinstance(m, kind))
    if isinstance(layer, nn.Linear):
        make = lambda i, o: nn.Linear(i, o, bias=layer.bias is not None)  # noqa: E731
        inputs, outputs = layer.in_features, layer.out_features
    else:
        make = lambda i, o: kind(i, o, layer.kernel_size, layer.stride, layer.padding,  # noqa: E731
                                 bias=layer.bias is not None)
        inputs, outputs = layer.in_channels, layer.out_channels
    branch = LabelBranch(wrap(make(input_dim, outputs - label_out)), wrap(make(inputs - input_dim, label_out)),
                         input_dim)
    parent_name, _, child = name.rpartition(".")
    setattr(net.get_submodule(parent_name) if parent_name else net, child, branch)
    return branch


def _mlp(sizes: Sequence[int], activation: nn.Module, norm: bool, dropout: float,
         norm_first: bool = False) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if norm and (i > 0 or norm_first):
            layers.append(nn.BatchNorm1d(b))
        layers.append(activation)
        if dropout:
            layers.append(nn.Dropout(dropout))
    return layers


class MLPConditionalGenerator(nn.Module):
    """(z, label) -> image: dense layers on ``[z, code(label)]``, tanh output reshaped to an image.

    Args:
        hidden: hidden widths; with ``conditioning=branch`` the first is the two branches' joined width.
        label_encoding: ``one_hot`` or ``embedding`` (learned, ``embedding_dim`` wide, default 10).
        norm: BatchNorm1d after every hidden layer but the first (with ``conditioning=branch``, on the branches too).
        activation: ``leaky_relu`` (slope 0.2) or ``relu``.
        conditioning, branch_width: ``concat``, or ``branch``: a dense layer of its own on the label with
            ``branch_width`` outputs (``None``: half of ``hidden[0]``); z's branch gets the rest.
    """

    #: takes class weights ``[N, num_classes]`` (a blend of classes) as well as class indices ``[N]``
    takes_class_weights = True

    def __init__(self, latent_dim: Count, num_classes: Count, image_size: Count = 28, channels: Count = 1,
                 hidden: Hidden = (256, 512, 1024), label_encoding: str = "one_hot",
                 embedding_dim: Count | None = None, norm: bool = True, init: bool = True,
                 activation: str = "leaky_relu", conditioning: str = "concat", branch_width: Count | None = None) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes, "MLP cGAN generator")
        self.latent_dim, self.image_size, self.channels = latent_dim, image_size, channels
        hidden = [int(w) for w in hidden]
        if activation not in ACTIVATIONS:
            raise UserError(f"model.generator.activation={activation!r} is unknown; use one of "
                            f"{', '.join(ACTIVATIONS)}.")
        self.branch_width = check_conditioning(conditioning, branch_width, "model.generator.branch_width", hidden[0])
        self.label = LabelEncoder(self.num_classes, label_encoding, embedding_dim)
        out = channels * image_size * image_size
        self.net = nn.Sequential(*_mlp([latent_dim + self.label.dim, *hidden], ACTIVATIONS[activation](), norm, 0.0,
                                       norm_first=conditioning == "branch"),
                                 nn.Linear(hidden[-1], out), nn.Tanh())
        if self.branch_width is not None:
            split_first_layer(self.net, nn.Linear, latent_dim, self.branch_width)
        if init:
            self.apply(dcgan_init)

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        h = torch.cat([z.flatten(1), self.label(labels, z.dtype)], 1)
        return self.net(h).view(z.shape[0], self.channels, self.image_size, self.image_size)


class MLPConditionalDiscriminator(nn.Module):
    """(image, label) -> logit ``[N]``: dense layers on ``[flat image, code(label)]``, ``dropout`` after each.

    ``hidden``, ``conditioning``, ``branch_width``: as for :class:`MLPConditionalGenerator`; ``norm``: BatchNorm1d
    after every hidden layer but the first (never on the layer that reads the image).
    """

    def __init__(self, num_classes: Count, image_size: Count = 28, channels: Count = 1,
                 hidden: Hidden = (1024, 512, 256), label_encoding: str = "one_hot",
                 embedding_dim: Count | None = None, dropout: DropoutRate = 0.3, init: bool = True, norm: bool = False,
                 conditioning: str = "concat", branch_width: Count | None = None) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes, "MLP cGAN discriminator")
        self.image_size, self.channels = image_size, channels
        hidden = [int(w) for w in hidden]
        self.branch_width = check_conditioning(conditioning, branch_width, "model.discriminator.branch_width",
                                               hidden[0])
        self.label = LabelEncoder(self.num_classes, label_encoding, embedding_dim,
                                  "model.discriminator.embedding_dim")
        pixels = channels * image_size * image_size
        self.net = nn.Sequential(*_mlp([pixels + self.label.dim, *hidden], nn.LeakyReLU(0.2, True), norm, dropout),
                                 nn.Linear(hidden[-1], 1))
        if self.branch_width is not None:
            split_first_layer(self.net, nn.Linear, pixels, self.branch_width)
        if init:
            self.apply(dcgan_init)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        h = torch.cat([x.flatten(1), self.label(labels, x.dtype)], 1)
        return self.net(h).view(x.shape[0])


def branch_dcgan(net: nn.Module, kind: type[nn.Module], input_dim: int, conditioning: str, channels: int | None,
                 key: str, init: bool, wrap: Callable[[nn.Module], nn.Module] = lambda m: m) -> int | None:
    """With ``conditioning=branch``, split the first ``kind`` layer of a DCGAN ``net`` (:func:`split_first_layer`,
    ``channels`` label maps; ``key`` names them) and, with ``init``, DCGAN-initialise the new layers; returns the
    label maps (``None``: concat)."""
    first = next(m for m in net.modules() if isinstance(m, kind)).out_channels
    channels = check_conditioning(conditioning, channels, key, first)
    if channels is not None:
        branch = split_first_layer(net, kind, input_dim, channels, wrap)
        if init:
            branch.apply(dcgan_init)
    return channels


class ConditionalDCGANGenerator(nn.Module):
    """(z, label) -> image: a :class:`DCGANGenerator` whose latent is ``[z, one_hot(label)]``.

    ``conditioning``: ``concat`` (the one-hot joins z as extra input channels) or ``branch`` (a transposed conv of
    its own on the label, ``branch_channels`` maps, default half of the first block's; z's branch gets the rest).
    """

    #: takes class weights ``[N, num_classes]`` (a blend of classes) as well as class indices ``[N]``
    takes_class_weights = True

    def __init__(self, latent_dim: Count, num_classes: Count, image_size: Count = 64, channels: Count = 3,
                 width: Count = 64, max_mult: Count = 8, norm: str = "batch", init: bool = True,
                 conditioning: str = "concat", branch_channels: Count | None = None) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes, "conditional DCGAN generator")
        self.latent_dim, self.image_size, self.channels = latent_dim, image_size, channels
        self.dcgan = DCGANGenerator(latent_dim + self.num_classes, image_size, channels, width, max_mult,
                                    norm, init)
        self.branch_channels = branch_dcgan(self.dcgan, nn.ConvTranspose2d, latent_dim, conditioning, branch_channels,
                                            "model.generator.branch_channels", init)

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        return self.dcgan(torch.cat([z.flatten(1), class_codes(labels, self.num_classes, z.dtype)], 1))


class ConditionalDCGANDiscriminator(nn.Module):
    """(image, label) -> logit ``[N]``: a :class:`DCGANDiscriminator` on the image stacked with
    ``num_classes`` constant maps holding the one-hot label (or the class weights).

    ``conditioning``: ``concat`` (the label maps are extra input channels of the first conv) or ``branch`` (a conv
    of its own on the label maps, ``branch_channels`` maps, default half of ``width``; the image's gets the rest).
    """

    def __init__(self, num_classes: Count, image_size: Count = 64, channels: Count = 3, width: Count = 64,
                 max_mult: Count = 8, norm: str = "batch", spectral_norm: bool = False, dropout: DropoutRate = 0.0,
                 init: bool = True, conditioning: str = "concat", branch_channels: Count | None = None) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes, "conditional DCGAN discriminator")
        self.image_size, self.channels = image_size, channels
        self.dcgan = DCGANDiscriminator(image_size, channels + self.num_classes, width, max_mult, norm,
                                        spectral_norm, dropout, init)
        sn = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        self.branch_channels = branch_dcgan(self.dcgan, nn.Conv2d, channels, conditioning, branch_channels,
                                            "model.discriminator.branch_channels", init, sn)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        n, _, h, w = x.shape
        maps = class_codes(labels, self.num_classes, x.dtype)[:, :, None, None].expand(n, -1, h, w)
        return self.dcgan(torch.cat([x, maps], 1))
