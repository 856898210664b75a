"""How fast a DataModule serves training batches."""
from __future__ import annotations

import time

import torch

from gan_lab.data.base import ImageDataModule
from gan_lab.pixels import to_float


def measure_throughput(datamodule: ImageDataModule, seconds: float = 5.0,
                       device: torch.device | str = "cpu", convert: bool = True) -> dict:
    """Time the set-up DataModule's training loader for about ``seconds``, batches moved to ``device``
    (with ``convert``, made float); returns images per second and what was measured."""
    loader = datamodule.train_dataloader()
    sampler = getattr(loader, "sampler", None)
    device = torch.device(device)
    images_seen = batches = epoch = 0
    shape = tuple(next(iter(loader))[0].shape[1:])  # warm-up: workers started, caches touched
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        for images, labels in loader:
            images = images.to(device, non_blocking=True)
            if convert:
                images = to_float(images)
            images_seen += images.shape[0]
            batches += 1
            if time.perf_counter() - start >= seconds:
                break
        epoch += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    return {"images_per_s": images_seen / elapsed, "images": images_seen, "batches": batches,
            "seconds": elapsed, "batch_size": datamodule.batch_size, "image_shape": shape,
            "loader": type(loader).__name__, "device": str(device), "threads": torch.get_num_threads()}
