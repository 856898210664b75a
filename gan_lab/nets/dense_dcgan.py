"""The Pokemon study's WGAN-GP generator: a dense layer (Linear + BatchNorm1d, no activation) to
``dense_channels`` 4x4 maps, then DCGAN-style 5x5 transposed convolutions and a last 4x4 one."""
from __future__ import annotations

import torch.nn as nn
from torch import Tensor

from gan_lab.constraints import Count, NonNegativeInt
from gan_lab.nets.dcgan import NORM_LAYERS, DropoutRate, channel_mults, check_image_size, norms_per_block
from gan_lab.nets.init import dcgan_init


class DenseDCGANGenerator(nn.Module):
    """z [N, latent_dim] -> image [N, channels, image_size, image_size] in [-1, 1] (tanh).

    Block ``i`` from the 4x4 end has ``width * min(2^(blocks-1-i), max_mult)`` channels; ``dropout`` follows
    the first ``dropout_blocks`` blocks (from the 4x4 end); ``norm``: the conv blocks' normalisation.
    """

    def __init__(self, latent_dim: Count, image_size: Count = 128, channels: Count = 3, width: Count = 32,
                 max_mult: Count = 16, dense_channels: Count = 256, dropout: DropoutRate = 0.5,
                 dropout_blocks: NonNegativeInt = 2, norm: str = "batch", init: bool = True) -> None:
        super().__init__()
        blocks = check_image_size(image_size, "dense DCGAN generator")
        self.latent_dim, self.image_size, self.channels = latent_dim, image_size, channels
        self.dense_channels = dense_channels
        self.dense = nn.Sequential(nn.Linear(latent_dim, dense_channels * 16),
                                   nn.BatchNorm1d(dense_channels * 16))  # -> view [dense_channels, 4, 4]
        widths = [width * mult for mult in channel_mults(blocks, max_mult)]
        norms = norms_per_block(norm, blocks, "model.generator.norm")
        layers: list[nn.Module] = []
        for i, (in_ch, out_ch, kind) in enumerate(zip([dense_channels, *widths], widths, norms)):
            stride = 1 if i == 0 else 2  # 4x4 -> 4x4, then doubling the side
            layers += [nn.ConvTranspose2d(in_ch, out_ch, 5, stride, 2, output_padding=stride - 1, bias=False),
                       NORM_LAYERS[kind](out_ch), nn.ReLU(True)]
            if dropout and i < dropout_blocks:
                layers.append(nn.Dropout(dropout))
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]  # -> image_size
        self.net = nn.Sequential(*layers)
        if init:
            self.apply(dcgan_init)

    def forward(self, z: Tensor) -> Tensor:
        h = self.dense(z.view(z.shape[0], -1))
        return self.net(h.view(z.shape[0], self.dense_channels, 4, 4))
