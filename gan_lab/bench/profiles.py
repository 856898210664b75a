"""``train --profile N``: where each loop's time goes, from ``torch.profiler``."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

import torch


@dataclass
class Profile:
    """Where a loop's time went over ``batches`` batches: ``ops`` maps each top-level aten op (not
    called by another aten op) to ``[calls, host us, device us of the kernels it launched]``;
    ``kernels`` counts the device's kernels and copies, ``device_us`` their time (0 on a CPU)."""

    batches: int
    wall_s: float
    ops: dict[str, list[float]] = field(default_factory=dict)
    kernels: int = 0
    device_us: float = 0.0

    @classmethod
    def of(cls, prof, batches: int, wall_s: float) -> "Profile":
        ops: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
        kernels, device_us = 0, 0.0
        for event in prof.events():
            if event.device_type != torch.autograd.DeviceType.CPU:  # a kernel or a copy on the device
                kernels += 1
                device_us += event.time_range.elapsed_us()
                continue
            parent = event.cpu_parent
            if not event.name.startswith("aten::") or (parent is not None and parent.name.startswith("aten::")):
                continue
            record = ops[event.name]
            record[0] += 1
            record[1] += event.cpu_time_total
            record[2] += event.device_time_total
        return cls(batches, wall_s, dict(ops), kernels, device_us)

    def per_batch(self, value: float) -> float:
        return value / self.batches

    def summary(self) -> str:
        host_ops_ms = self.per_batch(sum(r[1] for r in self.ops.values())) / 1000
        text = (f"{1000 * self.per_batch(self.wall_s):.2f} ms wall, {host_ops_ms:.2f} ms of it in host ops "
                f"({self.per_batch(sum(r[0] for r in self.ops.values())):.0f} ops)")
        if self.kernels:
            text += (f", device busy {self.per_batch(self.device_us) / 1000:.2f} ms "
                     f"({self.per_batch(self.kernels):.0f} kernels and copies)")
        return text


def profile_table(setting: str, ours: Profile, plain: Profile, top: int = 15) -> str:
    """Markdown: the two loops' per-batch summaries and their ``top`` most expensive ops side by side
    (by device time on a GPU, host time on a CPU), the rest in one row."""
    on_device = bool(ours.kernels or plain.kernels)
    col = 2 if on_device else 1

    def cost(name: str) -> float:
        return max(p.per_batch(p.ops.get(name, [0, 0.0, 0.0])[col]) for p in (ours, plain))

    names = sorted(set(ours.ops) | set(plain.ops), key=cost, reverse=True)
    unit = "host ms / device ms" if on_device else "host ms"
    lines = [f"### {setting}", "",
             f"Per batch, over {ours.batches} batches: gan_lab {ours.summary()}; plain loop {plain.summary()}.", "",
             f"| op | gan_lab calls | gan_lab {unit} | plain calls | plain {unit} |", "|---|---|---|---|---|"]

    def cells(p: Profile, chosen: Sequence[str]) -> list[str]:
        calls, host, dev = (sum(p.ops[n][k] for n in chosen if n in p.ops) for k in range(3))
        times = f"{p.per_batch(host) / 1000:.3f}" + (f" / {p.per_batch(dev) / 1000:.3f}" if on_device else "")
        return [f"{p.per_batch(calls):.1f}", times]

    for name in names[:top]:
        lines.append(table_row([name, *cells(ours, [name]), *cells(plain, [name])]))
    if names[top:]:
        lines.append(table_row([f"{len(names) - top} other ops", *cells(ours, names[top:]), *cells(plain, names[top:])]))
    return "\n".join(lines)


def table_row(row: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "/") for cell in row) + " |"
