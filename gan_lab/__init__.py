"""gan_lab: reproducible GAN experiments with PyTorch Lightning and Hydra."""
from pathlib import Path

from omegaconf import OmegaConf

__version__ = "0.1.0"

#: gan_lab's configs: ``gan_lab/conf`` (a link to the repository's ``conf/``; a copy in a wheel)
CONFIG_DIR = (Path(__file__).parent / "conf").resolve()

# ``${add:a,b}`` in configs, e.g. an ArtGAN preset's max_epochs: pre-training plus adversarial epochs
if not OmegaConf.has_resolver("add"):
    OmegaConf.register_new_resolver("add", lambda *values: sum(values))
