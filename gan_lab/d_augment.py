"""Differentiable augmentation of every image D sees: :class:`DiffAugment` and :class:`AdaptiveAugment` (ADA).

Both map images ``[N, C, H, W]`` (any range, any size) drawing from torch's global generator; at ``p = 0`` they
return their input and draw nothing."""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from gan_lab.constraints import Count, Fraction, Probability
from gan_lab.errors import UserError

POLICIES = ("color", "translation", "cutout")


def _chosen(n: int, p: float | Tensor, like: Tensor) -> Tensor:
    """Per-sample 0/1 float mask ``[N, 1, 1, 1]``, 1 with probability ``p`` (a number, or a 0-d float32 device
    tensor below 1)."""
    if not isinstance(p, Tensor) and p >= 1.0:
        return like.new_ones(n, 1, 1, 1)
    return (torch.rand(n, 1, 1, 1, device=like.device) < p).to(like.dtype)


def _where(mask: Tensor, new: Tensor, old: Tensor) -> Tensor:
    return old + mask * (new - old)


# --- DiffAugment ---------------------------------------------------------------------------------


def color(x: Tensor) -> Tensor:
    """Brightness (+U(-0.5, 0.5)), saturation (x U(0, 2) around the pixel's channel mean) and contrast
    (x U(0.5, 1.5) around the image mean), drawn per sample (DiffAugment's ``color``)."""
    n = x.shape[0]
    out = x + (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)
    mean = out.mean(dim=1, keepdim=True)
    out = (out - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) * 2) + mean
    mean = out.mean(dim=[1, 2, 3], keepdim=True)
    return (out - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean


def translation(x: Tensor, ratio: float = 0.125) -> Tensor:
    """Shift each image by up to ``ratio`` of its side in x and y (whole pixels), zeros shifted in."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (n, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1) - dy          # source row of each output row
    cols = torch.arange(w, device=x.device).view(1, 1, w) - dx
    inside = ((rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)).unsqueeze(1)
    index = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).view(n, 1, h * w).expand(-1, x.shape[1], -1)
    return x.flatten(2).gather(2, index).view_as(x) * inside.to(x.dtype)


def cutout(x: Tensor, ratio: float = 0.5) -> Tensor:
    """Set a square of ``ratio`` of the side, at a random place (possibly partly outside), to zero."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    top, left = cy - ch // 2, cx - cw // 2
    hole = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
    return x * (~hole).unsqueeze(1).to(x.dtype)


OPERATIONS = {"color": color, "translation": translation, "cutout": cutout}


class DiffAugment(nn.Module):
    """DiffAugment (Zhao et al. 2020): the ``policy`` operations (some of ``color``, ``translation``, ``cutout``)
    in order, each applied per sample with probability ``p``."""

    adaptive = False

    def __init__(self, policy: Sequence[str] = POLICIES, p: Probability = 1.0) -> None:
        super().__init__()
        policy = [str(op) for op in policy]
        unknown = [op for op in policy if op not in OPERATIONS]
        if unknown or not policy:
            raise UserError(f"d_augment.policy={policy} must list some of {', '.join(POLICIES)}; "
                            f"e.g. d_augment.policy=[color,translation,cutout].")
        self.policy, self.p = policy, float(p)

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0:
            return x
        for op in self.policy:
            out = OPERATIONS[op](x)  # its draws, then the draw of the samples it applies to
            x = _where(_chosen(x.shape[0], self.p, x), out, x)
        return x

    def extra_repr(self) -> str:
        return f"policy={self.policy}, p={self.p}"


# --- ADA -----------------------------------------------------------------------------------------


ADA_OPS = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac", "brightness", "contrast", "saturation")
ORIENTATION_OPS = ("xflip", "rotate90", "rotate")


def rotation_probability(p: float) -> float:
    """Probability of each of ADA's two rotations, ``1 - sqrt(1 - p)``: together they apply with probability ``p``."""
    return 1 - math.sqrt(max(0.0, 1 - p))


def _affine(n: int, p: float, device, dtype, ops: Sequence[str] = ADA_OPS, on_device: Tensor | None = None) -> Tensor:
    """Per-sample 2x3 matrices (normalised coordinates, output to input) of ADA's geometric operations, each with
    probability ``p`` (rotation up to pi). An operation left out of ``ops`` still draws its random numbers.
    ``on_device``: ``p`` and the rotations' probability as a float32 device tensor."""
    p_op, p_rot = (p, rotation_probability(p)) if on_device is None else (on_device[0], on_device[1])

    def chosen(op: str, prob: float | Tensor = p_op) -> Tensor:
        return (torch.rand(n, device=device) < prob).to(dtype) * float(op in ops)

    eye = torch.eye(3, device=device, dtype=dtype).expand(n, 3, 3).clone()

    def linear(a: Tensor | float, b: Tensor | float, c: Tensor | float, d: Tensor | float) -> Tensor:
        t = eye.clone()
        t[:, 0, 0], t[:, 0, 1], t[:, 1, 0], t[:, 1, 1] = a, b, c, d
        return t

    def rotation(angle: Tensor) -> Tensor:
        c, s = torch.cos(angle), torch.sin(angle)
        return linear(c, -s, s, c)

    def shifted(shift: Tensor) -> Tensor:
        t = eye.clone()
        t[:, :2, 2] = shift
        return t

    # the random numbers, in ADA's order, then the matrices, composed left to right
    flip = 1 - 2 * (chosen("xflip") * torch.randint(0, 2, (n,), device=device).to(dtype))
    quarter = chosen("rotate90") * torch.randint(0, 4, (n,), device=device).to(dtype) * (math.pi / 2)
    shift = chosen("xint")[:, None] * (torch.rand(n, 2, device=device, dtype=dtype) * 2 - 1) * 0.125 * 2
    iso = torch.exp2(chosen("scale") * torch.randn(n, device=device, dtype=dtype) * 0.2)
    angle = chosen("rotate", p_rot) * (torch.rand(n, device=device, dtype=dtype) * 2 - 1) * math.pi
    aniso = torch.exp2(chosen("aniso") * torch.randn(n, device=device, dtype=dtype) * 0.2)
    angle2 = chosen("rotate", p_rot) * (torch.rand(n, device=device, dtype=dtype) * 2 - 1) * math.pi
    frac = chosen("xfrac")[:, None] * torch.randn(n, 2, device=device, dtype=dtype) * 0.125 * 2
    m = eye
    for t in (linear(flip, 0, 0, 1), rotation(quarter), shifted(shift), linear(iso, 0, 0, iso),
              rotation(angle), linear(aniso, 0, 0, 1 / aniso), rotation(angle2), shifted(frac)):
        m = m @ t
    return m[:, :2, :]


def ada_pipeline(x: Tensor, p: float, ops: Sequence[str] = ADA_OPS, on_device: Tensor | None = None) -> Tensor:
    """ADA's geometric (one resampling, reflected borders) and colour operations named in ``ops``, each per sample
    with probability ``p``. ``on_device``: for ``0 < p < 1``, ``[p, rotation probability]`` as a float32 device
    tensor (the same images as with the number)."""
    if p == 0.0:
        return x
    n = x.shape[0]
    p_op: float | Tensor = p if on_device is None else on_device[0]

    def chosen(op: str) -> Tensor:
        return _chosen(n, p_op, x) * float(op in ops)

    theta = _affine(n, p, x.device, torch.float32, ops=ops, on_device=on_device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False).to(x.dtype)
    brightness = torch.randn(n, 1, 1, 1, device=x.device, dtype=x.dtype) * 0.2
    out = _where(chosen("brightness"), out + brightness, out)
    mean = out.mean(dim=[1, 2, 3], keepdim=True)
    contrast = torch.exp2(torch.randn(n, 1, 1, 1, device=x.device, dtype=x.dtype) * 0.5)
    out = _where(chosen("contrast"), (out - mean) * contrast + mean, out)
    if x.shape[1] == 3:
        grey = out.mean(dim=1, keepdim=True)
        saturation = torch.exp2(torch.randn(n, 1, 1, 1, device=x.device, dtype=x.dtype) * 1.0)
        out = _where(chosen("saturation"), (out - grey) * saturation + grey, out)
    return out


class AdaptiveAugment(nn.Module):
    """ADA (Karras et al. 2020): :func:`ada_pipeline` with a probability ``p`` tuned from r_t = E[sign(D(x_real))].

    Call :meth:`observe` after each D update and :meth:`batch_done` after each batch; every ``interval`` batches
    ``p`` moves by ``sign(r_t - target) * images / speed_images``, clamped to [0, ``max_p``] (one host sync).
    ``ops``: a subset of :data:`ADA_OPS`; leave out :data:`ORIENTATION_OPS` for digits, text and the like.
    """

    adaptive = True

    def __init__(self, target: Fraction = 0.6, speed_images: Count = 500_000, interval: Count = 4,
                 p: Probability = 0.0, max_p: Probability = 1.0, ops: Sequence[str] = ADA_OPS) -> None:
        super().__init__()
        if isinstance(ops, str) or not all(isinstance(op, str) for op in ops) or not ops:
            raise UserError(f"d_augment.ops={ops} must be a non-empty list of operation names out of "
                            f"{list(ADA_OPS)}; e.g. d_augment.ops=[xint,scale,aniso,xfrac,brightness,contrast].")
        unknown = [op for op in ops if op not in ADA_OPS]
        if unknown:
            raise UserError(f"d_augment.ops names unknown operation(s) {unknown}; choose among {list(ADA_OPS)}.")
        self.ops = tuple(ops)
        self.target, self.speed_images, self.interval = float(target), int(speed_images), int(interval)
        self.max_p = float(max_p)
        self.p = min(float(p), self.max_p)
        self.rt = 0.0                       # the last r_t, for logging
        # float32, on the images' device: D's sign sum and count since the last adjustment; p and the rotations' p
        self.stats = torch.zeros(2)
        self.p_device = torch.zeros(2)
        self._fill()
        self._batches, self._images = 0, 0

    def _fill(self) -> None:
        """Write ``p`` and the rotations' probability into :attr:`p_device`, with no host wait."""
        self.p_device[0].fill_(self.p)
        self.p_device[1].fill_(rotation_probability(self.p))

    def _follow(self, device: torch.device) -> None:
        if self.stats.device != device:
            self.stats, self.p_device = self.stats.to(device), self.p_device.to(device)

    def forward(self, x: Tensor) -> Tensor:
        self._follow(x.device)
        return ada_pipeline(x, self.p, self.ops, self.p_device if 0.0 < self.p < 1.0 else None)

    def capture_key(self) -> tuple[bool, bool]:
        """What a graph of the pipeline bakes in: ``(p > 0, p >= 1)``; any other ``p`` is read on the device."""
        return self.p > 0.0, self.p >= 1.0

    @torch.no_grad()
    def observe(self, real_outputs: Tensor, sum_over_ranks: Callable[[Tensor], Tensor] | None = None) -> None:
        """Add the signs and count of D's raw outputs on a real batch (positive: "real") to the device stats;
        ``sum_over_ranks`` sums them over DDP ranks."""
        outputs = real_outputs.detach().float()
        self._follow(outputs.device)
        stats = torch.stack([outputs.sign().sum(), torch.full((), float(outputs.numel()), device=outputs.device)])
        if sum_over_ranks is not None:
            stats = sum_over_ranks(stats)
        self.stats.add_(stats)

    def batch_done(self, images: int) -> None:
        """Count a training batch of ``images`` (over all ranks); adjusts ``p`` every ``interval`` batches."""
        self._batches += 1
        self._images += images
        if self._batches < self.interval:
            return
        sign_sum, count = self.stats.tolist()                    # the one host synchronisation
        self.rt = sign_sum / max(1.0, count)
        step = self._images / self.speed_images
        direction = (self.rt > self.target) - (self.rt < self.target)  # sign(r_t - target): 0 leaves p, as ADA's
        self.p = min(self.max_p, max(0.0, self.p + direction * step))
        self._fill()
        self.stats.zero_()
        self._batches, self._images = 0, 0

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps for an exact resume: p, r_t and the partial interval."""
        sign_sum, count = self.stats.tolist()
        return {"p": self.p, "rt": self.rt, "sign_sum": sign_sum, "count": int(count), "batches": self._batches,
                "images": self._images}

    def load_state(self, state: dict[str, Any]) -> None:
        self.p, self.rt = float(state["p"]), float(state["rt"])
        self._fill()
        self.stats[0].fill_(float(state["sign_sum"] or 0.0))    # None: nothing observed
        self.stats[1].fill_(float(state["count"]))
        self._batches, self._images = int(state["batches"]), int(state["images"])

    def extra_repr(self) -> str:
        ops = "" if self.ops == ADA_OPS else f", ops={list(self.ops)}"
        return (f"target={self.target}, speed_images={self.speed_images}, interval={self.interval}, "
                f"p={self.p:.4f}{ops}")
