"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) for the discriminator's inputs.

With little data D memorises the training images. DiffAugment applies the *same kind* of random
augmentation to real and to fake images just before the discriminator (in both the D and the G
step), so D never sees an un-augmented image and G is not pushed to reproduce the augmentations.
Every op is built from differentiable tensor ops (adds, multiplies, padding + indexing, masks), so
gradients flow back through the augmentation to the generator and to the input images (gradient
penalties such as MA-GP w.r.t. the images keep working).

Policies (images in [-1, 1], all random draws per sample):
``color``        brightness ``+U[-0.5, 0.5)``, saturation ``x U[0, 2)`` and contrast ``x U[0.5, 1.5)``
                 about the per-image (per-pixel channel / whole-image) mean, as in the original.
``translation``  integer shift of up to ``0.125`` of the side along each axis, zero padded.
``cutout``       a zeroed square of side ``0.5`` of the image side; unlike the original, the square
                 always lies fully inside the image, so the zeroed area is exact.

Random numbers are drawn on the CPU from ``generator`` (the global RNG when ``None``) and moved to
the images' device, so a seeded generator reproduces the same augmentation on any device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan_ga_utils.checks import Problems, check

POLICIES = ("color", "translation", "cutout")


def _rand(x: Tensor, *shape: int, generator: torch.Generator | None) -> Tensor:
    return torch.rand(shape, generator=generator).to(device=x.device, dtype=x.dtype)


def _randint(x: Tensor, low: int, high: int, *shape: int, generator: torch.Generator | None) -> Tensor:
    return torch.randint(low, high, shape, generator=generator).to(x.device)


def color(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    b = x.shape[0]
    x = x + (_rand(x, b, 1, 1, 1, generator=generator) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(x, b, 1, 1, 1, generator=generator) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x, b, 1, 1, 1, generator=generator) + 0.5) + mean


def translation(x: Tensor, generator: torch.Generator | None = None, ratio: float = 0.125) -> Tensor:
    b, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = _randint(x, -sy, sy + 1, b, 1, 1, generator=generator)
    tx = _randint(x, -sx, sx + 1, b, 1, 1, generator=generator)
    # Output pixel (i, j) reads input (i + ty, j + tx); out-of-range reads land in the zero padding.
    gy = torch.arange(h, device=x.device).view(1, h, 1) + sy + ty
    gx = torch.arange(w, device=x.device).view(1, 1, w) + sx + tx
    padded = F.pad(x, [sx, sx, sy, sy]).permute(0, 2, 3, 1)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    return padded[batch, gy, gx].permute(0, 3, 1, 2).contiguous()


def cutout(x: Tensor, generator: torch.Generator | None = None, ratio: float = 0.5) -> Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = _randint(x, 0, h - ch + 1, b, 1, 1, generator=generator)
    left = _randint(x, 0, w - cw + 1, b, 1, 1, generator=generator)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


_FUNCTIONS = {"color": color, "translation": translation, "cutout": cutout}


def parse_policy(policy: str | Sequence[str]) -> tuple[str, ...]:
    """``"color,translation"`` or ``["color", "translation"]`` -> names; ``""``/``"none"`` -> ``()``."""
    parts = policy.split(",") if isinstance(policy, str) else list(policy)
    names = tuple(p.strip() for p in parts if p.strip())
    if names == ("none",):
        return ()
    bad = [n for n in names if n not in POLICIES]
    if bad:
        raise ValueError(
            f"model.augment.policy={policy!r}: unknown name(s) {bad}; "
            f"allowed: {', '.join(POLICIES)} (comma separated), or '' / 'none'"
        )
    return names


def diff_augment(
    x: Tensor, policy: str | Sequence[str], *, generator: torch.Generator | None = None
) -> Tensor:
    """Apply the policies in order to a batch ``(B, C, H, W)``; an empty policy returns ``x`` itself."""
    for name in parse_policy(policy):
        x = _FUNCTIONS[name](x, generator)
    return x


class DiffAugment(nn.Module):
    """Config-facing wrapper; ``probability`` < 1 augments each sample with that probability."""

    def __init__(self, *, policy: str | Sequence[str] = "", probability: float = 1.0):
        super().__init__()
        check(type(self), {"policy": policy, "probability": probability}, "model.augment")
        self.policy = parse_policy(policy)
        self.probability = float(probability)
        self.enabled = bool(self.policy) and self.probability > 0.0

    @classmethod
    def config_problems(cls, values, key: str = "model.augment") -> list[str]:
        """What is wrong with these constructor values (see ``gan_ga_utils/checks.py``)."""
        p = Problems(values, key)
        p.number("probability", 0, 1)
        policy = values.get("policy")
        if policy is not None:
            names = [n.strip() for n in policy.split(",")] if isinstance(policy, str) else list(policy)
            p.need(all(n in POLICIES + ("none", "") for n in names), "policy",
                   f"a list of {list(POLICIES)}; it follows data.augment_policy: set that, "
                   "e.g. data.augment_policy=[translation,cutout] ([] turns it off)")
        return p

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if not self.enabled:
            return x
        if self.probability >= 1.0:
            return diff_augment(x, self.policy, generator=generator)
        keep = torch.rand(x.shape[0], generator=generator) < self.probability
        augmented = diff_augment(x, self.policy, generator=generator)
        return torch.where(keep.to(x.device).view(-1, 1, 1, 1), augmented, x)

    def extra_repr(self) -> str:
        return f"policy={','.join(self.policy) or 'none'}, probability={self.probability}"
