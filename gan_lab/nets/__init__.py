"""Plain ``nn.Module`` generators and discriminators: no training logic, every size an argument."""
from gan_lab.nets.artgan import ArtGANDiscriminator, ArtGANGenerator
from gan_lab.nets.conditional import (ConditionalDCGANDiscriminator, ConditionalDCGANGenerator, LabelBranch,
                                      MLPConditionalDiscriminator, MLPConditionalGenerator)
from gan_lab.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from gan_lab.nets.dense_dcgan import DenseDCGANGenerator
from gan_lab.nets.progressive import ProgressiveDiscriminator, ProgressiveGenerator
from gan_lab.nets.init import dcgan_init, kaiming_dense_dcgan_conv_init

__all__ = ["DCGANGenerator", "DCGANDiscriminator", "DenseDCGANGenerator", "dcgan_init",
           "kaiming_dense_dcgan_conv_init", "ProgressiveGenerator", "ProgressiveDiscriminator",
           "MLPConditionalGenerator", "MLPConditionalDiscriminator", "ConditionalDCGANGenerator",
           "ConditionalDCGANDiscriminator", "LabelBranch", "ArtGANGenerator", "ArtGANDiscriminator"]
