"""Kornia augmentation of float batches in [-1, 1] on the training device, per sample, at any input size."""
from __future__ import annotations

from typing import Annotated

import kornia.augmentation as K
import torch
from pydantic import Field
from torch import Tensor, nn

from gan_lab.constraints import AnyFloat, NonNegative, Positive, Probability
from gan_lab.errors import UserError

#: a share of the image's area kept by a crop
AreaShare = Annotated[float, Field(gt=0, le=1)]


class Augment(nn.Module):
    """Random resized crop, horizontal flip, rotation and colour jitter, each with a probability.

    Args:
        crop_p: probability of a random resized crop (resized back to the served size).
        crop_scale: range of the crop's area as a share of the image.
        crop_ratio: range of the crop's aspect ratio (width / height).
        degrees: rotation angle range: ``d`` for [-d, d], or ``[low, high]``.
        rotation_padding: ``border`` (repeat edge pixels), ``reflection`` or ``zeros`` (black, -1).
        brightness, contrast, saturation, hue: kornia ``ColorJitter`` strengths (hue in [0, 0.5]);
            saturation and hue apply to RGB only.
    """

    def __init__(self, crop_p: Probability = 0.0, crop_scale: tuple[AreaShare, AreaShare] = (0.08, 1.0),
                 crop_ratio: tuple[Positive, Positive] = (1.0, 1.0), hflip_p: Probability = 0.0,
                 rotation_p: Probability = 0.0, degrees: NonNegative | tuple[AnyFloat, AnyFloat] = 0.0,
                 rotation_padding: str = "border", jitter_p: Probability = 0.0, brightness: NonNegative = 0.0,
                 contrast: NonNegative = 0.0, saturation: NonNegative = 0.0,
                 hue: Annotated[float, Field(ge=0, le=0.5)] = 0.0) -> None:
        super().__init__()
        self.crop_p, self.hflip_p = float(crop_p), float(hflip_p)
        self.rotation_p, self.jitter_p = float(rotation_p), float(jitter_p)
        self.crop_scale, self.crop_ratio = tuple(float(v) for v in crop_scale), tuple(float(v) for v in crop_ratio)
        for key, given in (("crop_scale", crop_scale), ("crop_ratio", crop_ratio)):
            if float(given[0]) > float(given[1]):
                raise UserError(f"augment.{key}={list(given)} must be [low, high] with low <= high.")
        self.degrees = (-float(degrees), float(degrees)) if isinstance(degrees, (int, float)) else tuple(map(float, degrees))
        if rotation_padding not in ("border", "reflection", "zeros"):
            raise UserError(f"augment.rotation_padding={rotation_padding!r}; use border, reflection or zeros.")
        self.rotation_padding = rotation_padding
        self.jitter = dict(brightness=float(brightness), contrast=float(contrast),
                           saturation=float(saturation), hue=float(hue))
        self._pipelines: dict[tuple[int, int, int], nn.Module] = {}

    @property
    def enabled(self) -> bool:
        return (self.crop_p > 0 or self.hflip_p > 0 or (self.rotation_p > 0 and self.degrees != (0.0, 0.0))
                or (self.jitter_p > 0 and any(self.jitter.values())))

    def pipeline(self, channels: int, height: int, width: int) -> nn.Module:
        key = (channels, height, width)
        if key not in self._pipelines:
            ops: list[nn.Module] = []
            if self.crop_p > 0:
                # "resample": one affine warp per batch; the default "slice" syncs with the GPU per batch
                ops.append(K.RandomResizedCrop((height, width), scale=self.crop_scale, ratio=self.crop_ratio,
                                               p=self.crop_p, cropping_mode="resample"))
            if self.hflip_p > 0:
                ops.append(K.RandomHorizontalFlip(p=self.hflip_p))
            if self.rotation_p > 0 and self.degrees != (0.0, 0.0):
                zeros = self.rotation_padding == "zeros"  # in [0, 1] space (see forward): 0 is black
                ops.append(K.RandomAffine(self.degrees, padding_mode="fill" if zeros else self.rotation_padding,
                                          fill_value=torch.zeros(channels) if zeros else None, p=self.rotation_p))
            jitter = self.jitter if channels == 3 else {**self.jitter, "saturation": 0.0, "hue": 0.0}
            if self.jitter_p > 0 and any(jitter.values()):
                ops.append(K.ColorJitter(**jitter, p=self.jitter_p))
            self._pipelines[key] = nn.Sequential(*ops)
        return self._pipelines[key]

    def forward(self, images: Tensor) -> Tensor:
        """Float images in [-1, 1] -> augmented images in [-1, 1] (same shape, same device)."""
        if not self.enabled:
            return images
        n, c, h, w = images.shape
        x = images.add(1.0).mul_(0.5)  # kornia's colour ops expect [0, 1]
        x = self.pipeline(c, h, w).to(images.device)(x)
        return x.clamp_(0.0, 1.0).mul_(2.0).sub_(1.0)

    def extra_repr(self) -> str:
        return (f"crop_p={self.crop_p}, crop_scale={self.crop_scale}, hflip_p={self.hflip_p}, "
                f"rotation_p={self.rotation_p}, degrees={self.degrees}, jitter_p={self.jitter_p}, {self.jitter}")
