"""gan_lab: reproducible GAN experiments with PyTorch Lightning and Hydra."""
from pathlib import Path

from omegaconf import OmegaConf

__version__ = "0.1.0"

#: gan_lab's configs: ``gan_lab/conf``, the repository's ``conf/`` (a link to it in a checkout, so an
#: edit takes effect at once; a copy in an installed wheel)
CONFIG_DIR = (Path(__file__).parent / "conf").resolve()

# ``${add:a,b}`` in configs: e.g. an ArtGAN preset's trainer.max_epochs is its pre-training epochs
# plus its adversarial epochs, so overriding model.pretrain_epochs keeps the adversarial length.
if not OmegaConf.has_resolver("add"):
    OmegaConf.register_new_resolver("add", lambda *values: sum(values))
