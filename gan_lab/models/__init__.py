"""LightningModules: one GAN variant each (the training algorithm, not the nets)."""
from gan_lab.models.artgan import ArtGAN
from gan_lab.models.base import GAN
from gan_lab.models.conditional import ConditionalGAN

__all__ = ["GAN", "ConditionalGAN", "ArtGAN"]
