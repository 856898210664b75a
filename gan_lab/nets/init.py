"""Named weight initialisations, applied with ``module.apply(fn)``; layers matched by type."""
from __future__ import annotations

import torch.nn as nn

_CONV = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm, nn.LayerNorm)


def dcgan_init(module: nn.Module) -> None:
    """DCGAN paper init: conv and dense weights N(0, 0.02), norm scales N(1, 0.02), biases 0."""
    if isinstance(module, (*_CONV, nn.Linear)):
        nn.init.normal_(_weight(module), 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, _NORM) and getattr(module, "weight", None) is not None:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def kaiming_dense_dcgan_conv_init(module: nn.Module) -> None:
    """ArtGAN study init: Kaiming (He) normal for dense layers, DCGAN N(0, 0.02) for convolutions."""
    if isinstance(module, nn.Linear):
        nn.init.kaiming_normal_(_weight(module), nonlinearity="leaky_relu", a=0.2)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    else:
        dcgan_init(module)


def _weight(module: nn.Module):
    # Spectral norm keeps the raw weight under parametrizations.
    if hasattr(module, "parametrizations") and "weight" in module.parametrizations:
        return module.parametrizations.weight.original
    return module.weight
