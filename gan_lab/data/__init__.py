"""LightningDataModules: on-disk formats, decoded-once caches, batches in [-1, 1] on the device."""
from gan_lab.data.base import ImageDataModule
from gan_lab.data.digits import Digits

__all__ = ["ImageDataModule", "Digits"]
