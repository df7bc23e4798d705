"""Real images degraded as G's failures look, as extra fakes for D (negative data augmentation,
Sinha et al., ICLR 2021).

G's failure on the shapes data is a look, not a word: rounded, soft blobs where the data has
corners, points and crisp anti-aliased edges (a square read as a hexagon, a star as a square).
``round`` shows D each real render that way, as a fake of its own, true caption: a Gaussian blur
(sigma drawn per image), then each object's coverage pushed back to a crisp edge at its 0.5 level,
colours kept, so corners are rounded and points cut while edges stay as sharp as the data's. It
needs objects on a plain black background; the data set names the policy (``data.degrade_policy``),
as it names D's augmentation. A plain blur was measured too and did not pay (a blurred image is
too easy to tell from G's; docs/experiments.md, block ai).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEGRADE_POLICIES = ("round",)
REACH = 3  # pixels: the blur kernel's radius
PEAK_REACH = 3  # pixels: how far an object's own brightest pixel is looked for


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, radius: int = REACH) -> torch.Tensor:
    """Separable Gaussian blur of [N, C, H, W] with one sigma per image (zero padding: black borders)."""
    n, c, h, w = images.shape
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets[None] / sigma.float()[:, None]) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).to(images.dtype)  # [N, K]
    kernel = kernel.repeat_interleave(c, 0)  # [N*C, K]: one kernel per image and channel
    x = images.reshape(1, n * c, h, w)
    x = F.conv2d(x, kernel[:, None, None, :], padding=(0, radius), groups=n * c)
    x = F.conv2d(x, kernel[:, None, :, None], padding=(radius, 0), groups=n * c)
    return x.reshape(n, c, h, w)


def degrade(images: torch.Tensor, policy: str, sigma_range: tuple[float, float], generator: torch.Generator
            ) -> torch.Tensor:
    """Images in [-1, 1], objects on black -> their degraded copies, in [-1, 1]."""
    if policy not in DEGRADE_POLICIES:
        raise ValueError(f"model.degraded_policy={policy!r} is not one of {list(DEGRADE_POLICIES)}")
    low, high = sigma_range
    sigma = (low + (high - low) * torch.rand(images.shape[0], generator=generator)).to(images.device)
    ink = images.float() + 1.0  # [0, 2]: 0 on the background
    blurred = gaussian_blur(ink, sigma)
    # each object's own brightness: the brightest channel's peak near it (two objects of different
    # colours are each measured against their own colour)
    peak = F.max_pool2d(ink.amax(1, keepdim=True), 2 * PEAK_REACH + 1, stride=1, padding=PEAK_REACH)
    coverage = (blurred.amax(1, keepdim=True) / peak.clamp_min(1e-3)).clamp(0.0, 1.0)
    slope = 2.5 * sigma[:, None, None, None]  # the blur's edge slope back to about a pixel
    crisp = ((coverage - 0.5) * slope + 0.5).clamp(0.0, 1.0)
    rounded = blurred * crisp / coverage.clamp_min(1e-3)
    return (rounded - 1.0).clamp(-1.0, 1.0).to(images.dtype)
