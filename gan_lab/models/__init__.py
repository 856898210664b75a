"""LightningModules: one GAN variant each (the training algorithm, not the nets)."""
from gan_lab.models.artgan import ArtGAN
from gan_lab.models.base import GAN
from gan_lab.models.conditional import ConditionalGAN
from gan_lab.models.growth import GrowthSchedule
from gan_lab.models.pggan import PGGAN
from gan_lab.models.wgan import WGAN
from gan_lab.models.wgan_gp import WGANGP

__all__ = ["GAN", "ConditionalGAN", "ArtGAN", "WGAN", "WGANGP", "PGGAN", "GrowthSchedule"]
