"""Learning-rate schedules stepped once per epoch (the ArtGAN study's epoch -> lr table)."""
from __future__ import annotations

import bisect
from typing import Sequence

from torch.optim import Optimizer
from torch.optim import lr_scheduler
from torch.optim.lr_scheduler import LRScheduler

from gan_lab.errors import UserError


class PiecewiseLR(LRScheduler):
    """Sets the learning rate to ``lrs[i]`` from epoch ``milestones[i]`` on (absolute values).

    ``milestones`` must start at 0 and increase; e.g. the ArtGAN study's table
    ``milestones=[0, 25, 40, ...]``, ``lrs=[1e-3, 2e-4, 4e-5, ...]``.
    """

    def __init__(self, optimizer: Optimizer, milestones: Sequence[int], lrs: Sequence[float],
                 last_epoch: int = -1) -> None:
        milestones, lrs = list(milestones), [float(v) for v in lrs]
        if len(milestones) != len(lrs) or not milestones:
            raise UserError(f"scheduler milestones ({len(milestones)}) and lrs ({len(lrs)}) must be "
                            f"non-empty lists of the same length; fix scheduler.*.milestones/lrs.")
        if milestones[0] != 0 or any(b <= a for a, b in zip(milestones, milestones[1:])):
            raise UserError(f"scheduler milestones={milestones} must start at 0 and increase; "
                            f"e.g. [0, 25, 40].")
        if any(not lr > 0 for lr in lrs):
            raise UserError(f"scheduler lrs={lrs} must all be positive learning rates; e.g. [1e-3, 2e-4, 4e-5].")
        self.milestones, self.lrs = milestones, lrs
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> float:
        return self.lrs[bisect.bisect_right(self.milestones, epoch) - 1]

    def get_lr(self) -> list[float]:
        return [self.lr_at(max(self.last_epoch, 0)) for _ in self.optimizer.param_groups]


class ExponentialLR(lr_scheduler.ExponentialLR):
    """``lr_epoch = lr_0 * gamma^epoch`` (torch's ``ExponentialLR``), with ``gamma`` checked: a negative
    or zero factor would turn the updates into gradient ascent or stop them without a word."""

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1) -> None:
        if isinstance(gamma, bool) or not float(gamma) > 0:
            raise UserError(f"scheduler gamma={gamma} must be positive (the factor of the learning rate per epoch, "
                            f"below 1 to decay); e.g. scheduler.discriminator.gamma=0.95.")
        super().__init__(optimizer, float(gamma), last_epoch)
