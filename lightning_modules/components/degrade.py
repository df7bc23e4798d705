"""Degraded real images as extra fakes for D (negative data augmentation, Sinha et al., ICLR 2021).

G's failure on the shapes data is a look, not a word: rounded, soft-edged blobs where the data has
corners, points and crisp anti-aliased edges. Showing D real renders degraded that way, as fakes of
their own (true) captions, asks D to tell a crisp shape from its blob, whatever the caption says.

- ``blur``: a Gaussian blur (sigma drawn per image): soft edges, points and corners washed out.
- ``round``: the same blur, then the object's coverage pushed back to a crisp edge at its 0.5 level
  (colours kept): corners rounded and points cut, edges as sharp as the data's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEGRADE_KINDS = ("blur", "round")
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


def degrade(images: torch.Tensor, kind: str, sigma_range: tuple[float, float], generator: torch.Generator
            ) -> torch.Tensor:
    """Images in [-1, 1] on a black background -> their degraded copies, in [-1, 1]."""
    if kind not in DEGRADE_KINDS:
        raise ValueError(f"model.degraded_kind={kind!r} is not one of {list(DEGRADE_KINDS)}")
    low, high = sigma_range
    sigma = (low + (high - low) * torch.rand(images.shape[0], generator=generator)).to(images.device)
    ink = images.float() + 1.0  # [0, 2]: 0 on the background
    blurred = gaussian_blur(ink, sigma)
    if kind == "round":
        # each object's own brightness: the brightest channel's peak within reach of the blur (so two
        # objects of different colours are each measured against their own colour)
        peak = F.max_pool2d(ink.amax(1, keepdim=True), 2 * PEAK_REACH + 1, stride=1, padding=PEAK_REACH)
        coverage = (blurred.amax(1, keepdim=True) / peak.clamp_min(1e-3)).clamp(0.0, 1.0)
        slope = 2.5 * sigma[:, None, None, None]  # the blur's edge slope back to about a pixel
        crisp = ((coverage - 0.5) * slope + 0.5).clamp(0.0, 1.0)
        blurred = blurred * crisp / coverage.clamp_min(1e-3)
    return (blurred - 1.0).clamp(-1.0, 1.0).to(images.dtype)
