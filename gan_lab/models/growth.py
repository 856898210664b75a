"""The progressive growing schedule: per resolution, images to fade in, images to train stably, and the batch size.

The phase is a function of the images seen alone, so a checkpoint's ``images_seen`` resumes it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Mapping, Sequence

from pydantic import Field

from gan_lab.errors import UserError

STAGE_KEYS = ("resolution", "fade_images", "stable_images", "batch_size")


@dataclass(frozen=True)
class Stage:
    """One resolution of the schedule; ``start`` is the images seen when its fade-in begins."""

    resolution: int
    fade_images: int
    stable_images: int
    batch_size: int | None
    start: int

    @property
    def end(self) -> int:
        return self.start + self.fade_images + self.stable_images


@dataclass(frozen=True)
class Phase:
    """Where training stands: the resolution served, the fade-in weight and the batch size."""

    resolution: int
    alpha: float
    batch_size: int | None
    stage: int


class GrowthSchedule:
    """Resolutions 4, 8, ..., ``target_resolution``, each with a fade-in and a stable phase.

    alpha rises linearly from 0 to 1 over ``fade_images``, then stays 1 for ``stable_images``; after the last stage
    training goes on at the target resolution. Stages beyond ``target_resolution`` are ignored.

    Args:
        stages: ``{resolution, fade_images, stable_images, batch_size}`` mappings from 4x4 upwards without gaps
            (``batch_size`` null: data.batch_size).
        target_resolution: the final resolution (``data.image_size``).
    """

    def __init__(self, stages: Sequence[Mapping[str, Any]], target_resolution: Annotated[int, Field(ge=4)]) -> None:
        where = "callbacks.growth.schedule.stages"
        if not isinstance(stages, Sequence) or isinstance(stages, (str, bytes)) or not stages:
            raise UserError(f"{where} must be a non-empty list of stages like {{resolution: 4, "
                            f"fade_images: 0, stable_images: 600000, batch_size: 16}}.")
        parsed: list[Stage] = []
        start = 0
        for i, raw in enumerate(stages):
            if not isinstance(raw, Mapping):
                raise UserError(f"{where}[{i}]={raw!r} must be a mapping with keys {', '.join(STAGE_KEYS)}.")
            unknown = sorted(set(raw) - set(STAGE_KEYS))
            missing = [k for k in STAGE_KEYS if k not in raw]
            if unknown or missing:
                raise UserError(f"{where}[{i}] has unknown keys {unknown} and misses {missing}; "
                                f"each stage has exactly {', '.join(STAGE_KEYS)}.")
            res, fade, stable, batch = (raw[k] for k in STAGE_KEYS)
            expected = 4 * 2 ** i
            if res != expected:
                raise UserError(f"{where}[{i}].resolution={res} breaks the doubling from 4x4; stage {i} "
                                f"must be resolution {expected}.")
            for key, value in (("fade_images", fade), ("stable_images", stable)):
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise UserError(f"{where}[{i}].{key}={value!r} must be an integer >= 0 (images).")
            if i == 0 and fade:
                raise UserError(f"{where}[0].fade_images={fade}: the 4x4 stage has no lower resolution "
                                f"to fade from; set it to 0.")
            if batch is not None and (not isinstance(batch, int) or isinstance(batch, bool) or batch < 1):
                raise UserError(f"{where}[{i}].batch_size={batch!r} must be an integer >= 1, or null for "
                                f"data.batch_size.")
            parsed.append(Stage(res, fade, stable, batch, start))
            start += fade + stable
            if res == target_resolution:
                break
        if parsed[-1].resolution != target_resolution:
            raise UserError(f"{where} ends at {parsed[-1].resolution}x{parsed[-1].resolution} but the "
                            f"target resolution (data.image_size) is {target_resolution}; add stages up "
                            f"to {target_resolution} or lower data.image_size.")
        self.stages = parsed
        self.target_resolution = int(target_resolution)

    @property
    def total_images(self) -> int:
        """Images until the last stage's stable phase ends."""
        return self.stages[-1].end

    @property
    def batch_sizes(self) -> set[int | None]:
        return {s.batch_size for s in self.stages}

    def phase(self, images_seen: int) -> Phase:
        """The phase after ``images_seen`` training images."""
        i = next((i for i, stage in enumerate(self.stages) if images_seen < stage.end), len(self.stages) - 1)
        stage, into = self.stages[i], images_seen - self.stages[i].start
        alpha = 1.0 if stage.fade_images == 0 or into >= stage.fade_images else into / stage.fade_images
        return Phase(stage.resolution, float(alpha), stage.batch_size, i)

    def __repr__(self) -> str:
        body = ", ".join(f"{s.resolution}:{s.fade_images}+{s.stable_images}@{s.batch_size}" for s in self.stages)
        return f"GrowthSchedule({body})"
