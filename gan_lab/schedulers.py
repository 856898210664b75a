"""Learning-rate schedules stepped once per epoch (the ArtGAN study's epoch -> lr table)."""
from __future__ import annotations

import bisect
from typing import Annotated, Sequence

from pydantic import Field
from torch.optim import Optimizer, lr_scheduler

from gan_lab.constraints import NonNegativeInt, Positive
from gan_lab.errors import UserError

#: an epoch counter that starts before the first epoch (torch's ``last_epoch=-1``)
LastEpoch = Annotated[int, Field(ge=-1)]


class PiecewiseLR(lr_scheduler.LRScheduler):
    """Sets the learning rate to ``lrs[i]`` from epoch ``milestones[i]`` on; ``milestones`` start at 0 and
    increase (e.g. the ArtGAN study's ``[0, 25, 40, ...]`` with ``lrs=[1e-3, 2e-4, 4e-5, ...]``)."""

    def __init__(self, optimizer: Optimizer, milestones: Annotated[Sequence[NonNegativeInt], Field(min_length=1)],
                 lrs: Annotated[Sequence[Positive], Field(min_length=1)], last_epoch: LastEpoch = -1) -> None:
        milestones, lrs = list(milestones), [float(v) for v in lrs]
        if len(milestones) != len(lrs) or not milestones:
            raise UserError(f"scheduler milestones ({len(milestones)}) and lrs ({len(lrs)}) must be "
                            f"non-empty lists of the same length; fix scheduler.*.milestones/lrs.")
        if milestones[0] != 0 or any(b <= a for a, b in zip(milestones, milestones[1:])):
            raise UserError(f"scheduler milestones={milestones} must start at 0 and increase; "
                            f"e.g. [0, 25, 40].")
        self.milestones, self.lrs = milestones, lrs
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        lr = self.lrs[bisect.bisect_right(self.milestones, max(self.last_epoch, 0)) - 1]
        return [lr] * len(self.optimizer.param_groups)


class ExponentialLR(lr_scheduler.ExponentialLR):
    """``lr_epoch = lr_0 * gamma^epoch`` (torch's ``ExponentialLR``), with ``gamma`` > 0."""

    def __init__(self, optimizer: Optimizer, gamma: Positive, last_epoch: LastEpoch = -1) -> None:
        super().__init__(optimizer, float(gamma), last_epoch)
