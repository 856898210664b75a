"""Look at a dataset before training on it: ``python -m gan_lab.explore data=<name>``.

Writes to ``runs/explore/<data>/<time>/``: ``channel_stats.png``, ``composite_<statistic>.png``, ``file_sizes.png``,
``image_sizes.png``, ``class_counts.png`` (labelled data), ``samples.png``, ``unreadable.txt`` and ``summary.json``
(also printed)."""
from __future__ import annotations

import json
from pathlib import Path

import hydra
import numpy as np
import torch
from matplotlib.figure import Figure
from omegaconf import DictConfig
from PIL import Image

from gan_lab import CONFIG_DIR
from gan_lab.build import build_datamodule
from gan_lab.constraints import Count, check_value
from gan_lab.errors import UserError, exit_on_user_error
from gan_lab.grids import save_grid


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> dict[str, torch.Tensor]:
    """Per-pixel mean, min, max, std and variance ``[C, H, W]`` of uint8 images (0..255; variance in its square)."""
    total = torch.zeros(images.shape[1:], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for x in images.split(chunk):
        xf = x.double()
        total += xf.sum(0)
        squares += xf.square().sum(0)
    mean = total / images.shape[0]
    variance = (squares / images.shape[0] - mean.square()).clamp_min(0)
    return {"mean": mean.float(), "min": images.amin(0).float(), "max": images.amax(0).float(),
            "std": variance.sqrt().float(), "variance": variance.float()}


#: statistics in pixel values (0..255), written as they are; the others are scaled to their maximum
PIXEL_VALUED = ("mean", "min", "max")


def composite(name: str, value: torch.Tensor) -> np.ndarray:
    """A statistic ``[C, H, W]`` as one uint8 image ``[H, W, C]`` (``[H, W]`` for one channel): mean, min and max
    as pixel values; std and variance scaled by one maximum over all channels to 255 (hue kept)."""
    if name not in PIXEL_VALUED:
        value = value / max(float(value.max()), 1e-12) * 255
    return value.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).squeeze(-1).numpy()


def save_figure(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_channel_stats(stats: dict[str, torch.Tensor], path: Path, channel_names: list[str]) -> None:
    """One row per statistic, one column per channel, then (colour data) the RGB composite."""
    rows, channels = len(stats), stats["mean"].shape[0]
    cols = channels + (1 if channels == 3 else 0)
    fig = Figure(figsize=(2.6 * cols + 0.6, 2.4 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for r, (name, value) in enumerate(stats.items()):
        for c in range(channels):
            ax = axes[r][c]
            im = ax.imshow(value[c].numpy(), cmap="viridis", vmin=0,
                           vmax=255 if name in PIXEL_VALUED else max(float(value.max()), 1.0))
            ax.set_title(f"{name} {channel_names[c]}", fontsize=9)
            ax.axis("off")
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        if cols > channels:
            ax = axes[r][channels]
            ax.imshow(composite(name, value))
            ax.set_title(f"{name} RGB", fontsize=9)
            ax.axis("off")
    save_figure(fig, path)


def explore(cfg: DictConfig) -> dict:
    """Write the exploration files of ``cfg``'s dataset to ``cfg.run_dir``; returns the summary."""
    out = Path(cfg.run_dir)
    options = cfg.get("explore") or {}
    split = options.get("split", "train")
    if split not in ("train", "val"):
        raise UserError(f"explore.split={split} must be train or val.")
    samples = check_value(options.get("samples", 64), Count, "explore.samples", 64)
    nrow = check_value(options.get("nrow", 8), Count, "explore.nrow", 8)
    out.mkdir(parents=True, exist_ok=True)
    dm = build_datamodule(cfg)
    ds = dm.dataset(split)
    images, labels = ds.images, ds.labels
    n, channels, _, size = images.shape
    if n == 0:
        raise UserError(f"the {split} split of {dm.name} is empty; explore.split=train, or set "
                        f"data.val_fraction>0 for a val split.")
    info = getattr(dm, "info", {}).get(split)
    summary: dict = {"dataset": dm.name, "split": split, "images": n, "image_size": size,
                     "channels": channels, "num_classes": dm.num_classes}
    channel_names = ["grey"] if channels == 1 else ["red", "green", "blue"][:channels]
    stats = channel_stats(images)
    plot_channel_stats(stats, out / "channel_stats.png", channel_names)
    for name, value in stats.items():
        Image.fromarray(composite(name, value)).save(out / f"composite_{name}.png")
    summary["channel_mean"] = [round(float(v), 2) for v in stats["mean"].mean((1, 2))]
    # per-channel std over all pixels, from the per-pixel mean and std: E[x^2] - E[x]^2
    second = (stats["std"].double().square() + stats["mean"].double().square()).mean((1, 2))
    first = stats["mean"].double().mean((1, 2))
    summary["channel_std"] = [round(float(v), 2) for v in (second - first.square()).clamp_min(0).sqrt()]

    file_sizes = getattr(info, "file_sizes", None)
    if file_sizes is not None and len(file_sizes):
        kb = file_sizes.double() / 1024
        fig = Figure(figsize=(6, 3.5))
        ax = fig.subplots()
        ax.hist(kb.numpy(), bins=40, color="tab:blue", edgecolor="white")
        ax.set(title=f"{dm.name} {split}: file sizes", xlabel="kB", ylabel="images")
        save_figure(fig, out / "file_sizes.png")
        summary["file_kb"] = {"min": round(float(kb.min()), 1), "median": round(float(kb.median()), 1),
                              "max": round(float(kb.max()), 1)}
    else:
        summary["file_kb"] = "not applicable (images stored in array files)"

    source = getattr(info, "source_sizes", None)
    if source is None:
        source = torch.tensor([[size, size]]).expand(n, 2)
    fig = Figure(figsize=(9, 3.5))
    axes = fig.subplots(1, 2)
    for ax, column, name in zip(axes, (0, 1), ("width", "height")):
        ax.hist(source[:, column].numpy(), bins=40, color="tab:green", edgecolor="white")
        ax.set(title=f"source {name}", xlabel="pixels", ylabel="images")
    save_figure(fig, out / "image_sizes.png")
    pairs, counts = torch.unique(source, dim=0, return_counts=True)
    top = counts.argsort(descending=True)[:5]
    summary["source_sizes"] = {f"{int(pairs[i, 0])}x{int(pairs[i, 1])}": int(counts[i]) for i in top}

    if dm.num_classes > 1:
        per_class = torch.bincount(labels, minlength=dm.num_classes)
        fig = Figure(figsize=(max(6.0, 0.35 * dm.num_classes + 2), 4))
        ax = fig.subplots()
        ax.bar(range(dm.num_classes), per_class.numpy(), color="tab:orange")
        ax.set_xticks(range(dm.num_classes), [str(c) for c in dm.class_names], rotation=60, ha="right",
                      fontsize=8)
        ax.set(title=f"{dm.name} {split}: images per class", ylabel="images")
        save_figure(fig, out / "class_counts.png")
        summary["class_counts"] = {str(c): int(k) for c, k in zip(dm.class_names, per_class)}

    pick = torch.randperm(n, generator=torch.Generator().manual_seed(int(cfg.seed)))[:samples]
    save_grid(images[pick], out / "samples.png", nrow=nrow, upscale_to=64)

    skipped = list(info.skipped) if info is not None else []
    (out / "unreadable.txt").write_text("".join(f"{line}\n" for line in skipped))
    summary["unreadable"] = len(skipped)
    summary["output"] = str(out.resolve())
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def print_summary(summary: dict) -> None:
    print(f"gan_lab: {summary['dataset']} ({summary['split']}): {summary['images']} images, "
          f"{summary['channels']} channel(s) at {summary['image_size']}x{summary['image_size']}, "
          f"{summary['num_classes']} class(es), {summary['unreadable']} unreadable")
    print(f"  channel mean {summary['channel_mean']}, std {summary['channel_std']} (0..255)")
    print(f"  file sizes (kB): {summary['file_kb']}")
    print(f"  source sizes (most common): {summary['source_sizes']}")
    if "class_counts" in summary:
        print(f"  images per class: {summary['class_counts']}")
    print(f"gan_lab: exploration written to {summary['output']}")


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="explore")
def main(cfg: DictConfig) -> None:
    print_summary(exit_on_user_error(explore, cfg, interrupted="explore interrupted (Ctrl-C); run the same command "
                                                              "again for the whole exploration."))


if __name__ == "__main__":
    main()
