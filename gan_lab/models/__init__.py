"""LightningModules: one GAN variant each (the training algorithm, not the nets)."""
from gan_lab.models.base import GAN

__all__ = ["GAN"]
