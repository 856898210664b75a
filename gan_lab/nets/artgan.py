"""ArtGAN nets (Tan et al., ICIP 2017): G = zNet + Dec, D = Enc + clsNet with K+1 outputs (K classes + "fake").

zNet and Enc map to ``[N, 4 * width, 8, 8]`` features; Dec(Enc(x)) is the reconstruction autoencoder."""
from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from gan_lab.constraints import Count
from gan_lab.nets.conditional import check_num_classes, class_codes
from gan_lab.nets.dcgan import DropoutRate, check_image_size, output_layer
from gan_lab.nets.init import dcgan_init

FEATURE_SIZE = 8  # side of the shared feature map between zNet/Enc and Dec/clsNet


def check_artgan_size(image_size: int, net: str) -> int:
    """Number of doublings from the 8x8 features to ``image_size``; raises UserError for unsupported sizes."""
    return check_image_size(image_size, f"ArtGAN {net}") - 1  # the first doubling from 4x4 gives the 8x8 features


def channels_at(resolution: int, width: int) -> int:
    return max(width, FEATURE_SIZE * 4 * width // resolution)


def _drop(p: float) -> list[nn.Module]:
    return [nn.Dropout(p)] if p else []


class ZNet(nn.Module):
    """``[z, one_hot(k)]`` -> features ``[N, 4w, 8, 8]`` (1x1 -> 4x4 -> 8x8 transposed convs)."""

    def __init__(self, latent_dim: int, num_classes: int, width: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim + num_classes, 8 * width, 4, 1, 0, bias=False),  # -> 4x4
            nn.BatchNorm2d(8 * width), nn.ReLU(True),
            nn.ConvTranspose2d(8 * width, 4 * width, 4, 2, 1, bias=False),  # -> 8x8
            nn.BatchNorm2d(4 * width), nn.ReLU(True))

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        y = class_codes(labels, self.num_classes, z.dtype)  # one-hot, or a blend of classes
        return self.net(torch.cat([z.flatten(1), y], 1)[:, :, None, None])


class Decoder(nn.Module):
    """Dec: features ``[N, 4w, 8, 8]`` -> image ``[N, C, S, S]``, in [-1, 1] (``output="tanh"``) or [0, 1]."""

    def __init__(self, image_size: int, channels: int, width: int, dropout: float, output: str) -> None:
        super().__init__()
        steps = check_artgan_size(image_size, "decoder")
        layers: list[nn.Module] = []
        for res in (FEATURE_SIZE * 2 ** i for i in range(steps - 1)):  # doubling from 8x8 to S/2 x S/2
            c_in, c_out = channels_at(res, width), channels_at(res * 2, width)
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(True), *_drop(dropout)]
        c = channels_at(image_size // 2, width)
        layers += [nn.ConvTranspose2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(True), *_drop(dropout),
                   nn.ConvTranspose2d(c, channels, 4, 2, 1), output_layer(output)]  # -> S x S
        self.net = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> Tensor:
        return self.net(features)


class Encoder(nn.Module):
    """Enc: image ``[N, C, S, S]`` -> features ``[N, 4w, 8, 8]`` (mirror of :class:`Decoder`)."""

    def __init__(self, image_size: int, channels: int, width: int, dropout: float) -> None:
        super().__init__()
        steps = check_artgan_size(image_size, "encoder")
        c = channels_at(image_size // 2, width)
        layers: list[nn.Module] = [nn.Conv2d(channels, c, 4, 2, 1), nn.LeakyReLU(0.2, True), *_drop(dropout),
                                   nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c),
                                   nn.LeakyReLU(0.2, True), *_drop(dropout)]
        for res in (image_size // 2 ** i for i in range(1, steps)):  # halving from S/2 x S/2 to 8x8
            c_in, c_out = channels_at(res, width), channels_at(res // 2, width)
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out),
                       nn.LeakyReLU(0.2, True), *_drop(dropout)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ClsNet(nn.Module):
    """clsNet: features ``[N, 4w, 8, 8]`` -> K+1 logits (one sigmoid each: K classes, then "fake")."""

    def __init__(self, num_classes: int, width: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(4 * width, 8 * width, 4, 2, 1, bias=False), nn.BatchNorm2d(8 * width),  # -> 4x4
            nn.LeakyReLU(0.2, True), *_drop(dropout), nn.Flatten(),
            nn.Linear(8 * width * 16, num_classes + 1))

    def forward(self, features: Tensor) -> Tensor:
        return self.net(features)


class ArtGANGenerator(nn.Module):
    """(z, label) -> image: ``decoder(znet(z, label))``; ``decoder`` is shared with the reconstruction.
    ``output``: ``tanh`` (images in [-1, 1]) or ``sigmoid`` (in [0, 1])."""

    #: takes class weights ``[N, num_classes]`` (a blend of classes) as well as class indices ``[N]``
    takes_class_weights = True

    def __init__(self, latent_dim: Count, num_classes: Count, image_size: Count = 64, channels: Count = 3,
                 width: Count = 128, dropout: DropoutRate = 0.0, init: bool = True, output: str = "tanh") -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes, "ArtGAN generator")
        self.latent_dim, self.image_size, self.channels = latent_dim, image_size, channels
        self.output = output
        self.znet = ZNet(latent_dim, self.num_classes, width)
        self.decoder = Decoder(image_size, channels, width, float(dropout), output)
        if init:
            self.apply(dcgan_init)

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        return self.decoder(self.znet(z, labels))


class ArtGANDiscriminator(nn.Module):
    """image -> K+1 logits ``[N, K+1]``; ``dropout`` follows every encoder block, ``classifier_dropout`` clsNet's."""

    def __init__(self, num_classes: Count, image_size: Count = 64, channels: Count = 3, width: Count = 128,
                 dropout: DropoutRate = 0.0, classifier_dropout: DropoutRate = 0.0, init: bool = True) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes, "ArtGAN discriminator")
        self.image_size, self.channels = image_size, channels
        self.encoder = Encoder(image_size, channels, width, float(dropout))
        self.classifier = ClsNet(self.num_classes, width, float(classifier_dropout))
        if init:
            self.apply(dcgan_init)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.encoder(x))
