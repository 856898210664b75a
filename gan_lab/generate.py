"""Draw images from a trained run: ``python -m gan_lab.generate run_dir=<run> [key=value ...]``.

Writes ``samples.png``, optional ``images/*.png``, interpolations between seeds and (conditional models) class
sweeps and blends, as grids and GIFs, to ``out_dir`` (default ``<run>/generated``); EMA weights with ``ema``."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Sequence

import hydra
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from PIL import Image
from pydantic import Field
from torch import Tensor

from gan_lab import CONFIG_DIR
from gan_lab.constraints import AnyInt, Count, NonNegativeInt, check_value
from gan_lab.errors import UserError, exit_on_user_error
from gan_lab.fs import write_problem
from gan_lab.grids import grid_image, save_grid
from gan_lab.metrics.sampling import ema_weights, interpolate_latents, latents_from_seeds, seeded_latents
from gan_lab.runs import load_run, pick_device, required_run_dir

#: the latent paths of ``interpolation.modes``
MODES = ("linear", "spherical")
#: the single values of a request: their declared types and an example
REQUEST = {"seed": (AnyInt, 0), "ema": (bool, "true"), "individual": (bool, "true"), "interpolation.gif": (bool, "true"),
           "interpolation.class_blend": (bool, "true"), "num_samples": (Count, 64), "per_class": (Count, 8),
           "nrow": (Count | None, 8), "upscale_to": (NonNegativeInt, 64),
           "interpolation.steps": (Annotated[int, Field(ge=2)], 8), "interpolation.rows": (Count, 4),
           "interpolation.frame_ms": (Count, 120), "interpolation.seeds": (list[AnyInt] | None, "[0,1]"),
           "classes": (Annotated[list[int | str], Field(min_length=1)] | None, "[0,1]")}


def class_indices(classes: Sequence | None, names: list[str]) -> list[int]:
    """Class names (or indices) -> indices; ``None`` -> every class."""
    if classes is None:
        return list(range(len(names)))
    out = []
    for c in classes:
        if str(c) in names:
            out.append(names.index(str(c)))
        elif isinstance(c, int) and 0 <= c < len(names):
            out.append(c)
        else:
            raise UserError(f"classes: {c!r} is not a class of this dataset; choose from {', '.join(names)}.")
    return out


@torch.no_grad()
def sample_images(model, n: int, seed: int, labels: Tensor | None = None) -> Tensor:
    """``n`` images in [-1, 1] from seeded latents (labels: the class of each image, or zeros)."""
    z = seeded_latents(model, n, seed)
    if labels is None:
        labels = torch.zeros(n, dtype=torch.long)
    return model.sample(z, labels.to(model.device)).cpu()


@torch.no_grad()
def interpolation_frames(model, seeds: Sequence[int], steps: int, mode: str = "linear", label: int = 0) -> Tensor:
    """Images along a latent path through one latent per seed (endpoints are those seeds' samples)."""
    if len(seeds) < 2:
        raise UserError(f"interpolation.seeds={list(seeds)} needs at least two seeds, e.g. [0,1].")
    z = interpolate_latents(latents_from_seeds(model, list(seeds)), steps, mode)
    return model.sample(z, torch.full((z.shape[0],), int(label), dtype=torch.long, device=model.device)).cpu()


@torch.no_grad()
def class_sweep(model, classes: Sequence[int], rows: int, seed: int) -> Tensor:
    """Fixed latents (one per row) rendered as every class in ``classes``: [rows * len(classes), ...]."""
    z = seeded_latents(model, rows, seed).repeat_interleave(len(classes), dim=0)
    labels = torch.tensor(list(classes), dtype=torch.long, device=model.device).repeat(rows)
    return model.sample(z, labels).cpu()


@torch.no_grad()
def class_blend(model, classes: Sequence[int], steps: int, rows: int, seed: int,
                num_classes: int) -> tuple[Tensor, int]:
    """Fixed latents (one per row) along a path through ``classes``, class weights moving linearly between
    consecutive classes in ``steps`` frames; returns the images, row-major, and the frames per row."""
    eye = torch.eye(num_classes, device=model.device)
    t = torch.linspace(0.0, 1.0, steps, device=model.device)[1:, None]
    weights = torch.cat([eye[classes[0]][None], *((1 - t) * eye[a] + t * eye[b]
                                                  for a, b in zip(classes[:-1], classes[1:]))])
    frames = weights.shape[0]
    z = seeded_latents(model, rows, seed).repeat_interleave(frames, dim=0)
    return model.sample(z, weights.repeat(rows, 1)).cpu(), frames


def plain(value):
    """A list of the config (``ListConfig``) as a Python list; any other value as it is."""
    return list(value) if isinstance(value, ListConfig) else value


def check_request(cfg: DictConfig) -> None:
    """The values of a request, checked before the run is loaded."""
    for key, (hint, shown) in REQUEST.items():
        check_value(plain(OmegaConf.select(cfg, key)), hint, key, shown)
    modes = plain(cfg.interpolation.modes)
    if not isinstance(modes, list) or any(str(m) not in MODES for m in modes):
        raise UserError(f"interpolation.modes={modes!r} must list some of {', '.join(MODES)}; "
                        f"e.g. interpolation.modes=[linear,spherical].")
    pick_device(cfg.device)


def generate(cfg: DictConfig) -> dict[str, str]:
    """Write everything ``cfg`` (conf/generate.yaml) asks for; returns ``{what: path}``."""
    check_request(cfg)
    run_dir = required_run_dir(cfg)
    out = Path(cfg.out_dir) if cfg.out_dir else run_dir / "generated"
    if (problem := write_problem(out)) is not None:  # also creates out
        raise UserError(f"out_dir={out} cannot be written ({problem}); pass out_dir=<a writable folder>.")
    run = load_run(run_dir, cfg.ckpt, cfg.device)
    model = run.model
    names = [str(n) for n in run.datamodule.class_names]
    inter, up = cfg.interpolation, int(cfg.upscale_to)
    steps, frame_ms = int(inter.steps), int(inter.frame_ms)
    written: dict[str, str] = {}

    def grid(name: str, images: Tensor, nrow: int, row_names: Sequence[str] | None = None) -> None:
        written[name] = str(save_grid(images, out / f"{name}.png", nrow, row_names, up))

    def gif(name: str, pictures: list[Image.Image]) -> None:
        """An animated GIF that plays ``pictures`` forward then back, looping forever."""
        sequence = pictures + pictures[-2:0:-1]
        sequence[0].save(out / f"{name}.gif", save_all=True, append_images=sequence[1:], duration=frame_ms, loop=0)
        written[f"{name}_gif"] = str(out / f"{name}.gif")

    with ema_weights(model, cfg.ema):
        if model.conditional:
            classes = class_indices(cfg.classes, names)
            labels = torch.tensor(classes).repeat_interleave(int(cfg.per_class))
            images = sample_images(model, labels.numel(), cfg.seed, labels)
            nrow = int(cfg.nrow or cfg.per_class)
            row_names = [names[c] for c in classes] if nrow == int(cfg.per_class) else None
        else:
            if cfg.classes is not None:
                raise UserError(f"classes={list(cfg.classes)} but this model is not class-conditional; drop classes.")
            labels = None
            images = sample_images(model, int(cfg.num_samples), cfg.seed)
            nrow, row_names = int(cfg.nrow or max(1, round(int(cfg.num_samples) ** 0.5))), None
        grid("samples", images, nrow, row_names)
        if cfg.individual:
            for i, image in enumerate(images):
                suffix = f"_{names[int(labels[i])]}" if labels is not None else ""
                save_grid(image[None], out / "images" / f"{i:05d}{suffix}.png", nrow=1)
            written["images"] = str(out / "images")
        seeds = list(inter.seeds or [])
        if seeds:
            label = classes[0] if model.conditional and cfg.classes is not None else 0
            for mode in inter.modes:
                frames = interpolation_frames(model, seeds, steps, str(mode), label)
                # the grid: one row per pair of seeds, both ends shown; the GIF: the path once
                rows = torch.cat([frames[r * (steps - 1):r * (steps - 1) + steps] for r in range(len(seeds) - 1)])
                grid(f"interpolation_{mode}", rows, steps, [f"{a}->{b}" for a, b in zip(seeds[:-1], seeds[1:])])
                if inter.gif:
                    gif(f"interpolation_{mode}", [grid_image(f[None], 1, upscale_to=max(up, 128)) for f in frames])
        if model.conditional:
            rows = int(inter.rows)
            sweep = class_sweep(model, classes, rows, cfg.seed)
            grid("classes", sweep, len(classes))
            if inter.gif:
                gif("classes", [grid_image(sweep[i::len(classes)], nrow=rows, upscale_to=up)
                                for i in range(len(classes))])
            blend_wanted = inter.class_blend and len(classes) > 1
            if blend_wanted and not getattr(model.generator, "takes_class_weights", False):
                print("class_blend: skipped, this model's generator takes class indices only (a generator that "
                      "also takes class weights [N, num_classes] says so with takes_class_weights = True).")
            elif blend_wanted:
                blend, frames = class_blend(model, classes, steps, rows, cfg.seed, len(names))
                grid("class_blend", blend, frames, [" -> ".join(names[c] for c in classes)] * rows)
                if inter.gif:
                    gif("class_blend", [grid_image(blend[i::frames], nrow=rows, upscale_to=up) for i in range(frames)])
    for key, path in written.items():
        print(f"{key}: {path}")
    return written


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="generate")
def main(cfg: DictConfig) -> None:
    exit_on_user_error(generate, cfg,
                       interrupted="generate interrupted (Ctrl-C); run the same command again to write every picture.")


if __name__ == "__main__":
    main()
