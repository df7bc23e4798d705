"""Noise, prompt -> image sampling, and labelled PNG grids (shared by training and generate.py)."""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from gan_ga_utils.files import atomic_write


class Noise(IntEnum):
    """The independent random streams of a run: ``seed_for(seed, ..., Noise.X, ...)``. The values are
    part of every seed drawn, so they never change (a resumed run draws what it would have drawn)."""

    D = 0  # the generator's noise in a D step
    G = 1  # the generator's noise in a G step
    VAL = 2  # fixed noise of the sample grids and validation
    AUG_REAL = 3  # D augmentation of real images
    AUG_FAKE = 4  # D augmentation of fakes in the D step
    AUG_G = 5  # D augmentation of fakes in the G step
    MISMATCH = 6  # the choice of mismatched captions
    VAE = 7  # model=vaegan: the reparameterisation noise of the posterior sample
    AUG_RECON = 8  # model=vaegan: one D augmentation shared by real images and their reconstructions
    EVAL = 11  # evaluate.py and training metrics: noise per sample index
    EVAL_SUBSET = 12  # evaluate.py and training metrics: which images of a split are scored
    G_TWIN = 13  # the second noise of the mode-seeking term's pairs (same caption, other noise)
    G_MMD = 14  # the fakes of the per-caption MMD term (K fakes of a caption)
    DEGRADE = 15  # model.degraded_weight: the blur of each degraded real image


def seed_for(*parts: int) -> int:
    """A 63-bit seed from integers (run seed, rank, batch, purpose): independent streams, no state."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint64)[0] >> 1)


def sample_noise(n: int, z_dim: int, *, seed: int, truncation: float | None = None) -> torch.Tensor:
    """Standard normal noise on the CPU; with ``truncation`` every value is redrawn into [-t, t]."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.empty(n, z_dim)
    if truncation is None or truncation <= 0:
        return z.normal_(generator=generator)
    return torch.nn.init.trunc_normal_(z, a=-truncation, b=truncation, generator=generator)


def uint8_pixels(images: torch.Tensor) -> torch.Tensor:
    """[N,3,H,W] in [-1,1] -> [N,3,H,W] uint8 on the same device: gan-ga's one float -> 8-bit
    conversion (PNGs, loggers, Inception and CLIP inputs)."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N,3,H,W] in [-1,1] -> [N,H,W,3] uint8 numpy (loggers save float images as black PNGs)."""
    return uint8_pixels(images).permute(0, 2, 3, 1).cpu().numpy()


def side_by_side(row: np.ndarray) -> np.ndarray:
    """[K, H, W, 3] samples of one prompt -> one [H, K*W, 3] strip."""
    return np.concatenate(list(row), axis=1)


def labelled_grid(rows: np.ndarray, labels: Sequence[str], *, scale: int = 1, label_width: int = 220) -> Image.Image:
    """``rows``: [P, K, H, W, 3] uint8 (P prompts, K samples each) -> one picture, prompt left of its row."""
    n_rows, n_cols, height, width = rows.shape[:4]
    cell_h, cell_w, pad = height * scale, width * scale, 2
    canvas = Image.new("RGB", (label_width + n_cols * (cell_w + pad), n_rows * (cell_h + pad)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for r in range(n_rows):
        top = r * (cell_h + pad)
        draw.text((4, top + cell_h // 2 - 6), _fit(labels[r], draw, font, label_width - 8), fill=(0, 0, 0), font=font)
        for c in range(n_cols):
            tile = Image.fromarray(rows[r, c]).resize((cell_w, cell_h), Image.Resampling.NEAREST)
            canvas.paste(tile, (label_width + c * (cell_w + pad), top))
    return canvas


def _fit(text: str, draw: ImageDraw.ImageDraw, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def save_png(image: Image.Image, path: str | Path) -> Path:
    """Write through a temporary name, so a crash never leaves half a PNG under the final name."""
    with atomic_write(path, fsync=False) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)
