"""Generator backbone: 4x4 seed, then one upsampling residual block per doubling (DF-GAN layout).

How text enters each block is the fusion's business (see ``fusion.py``); the backbone only asks it.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gan_ga_utils.checks import Problems, check
from lightning_modules.components.fusion import Condition, Fusion
from lightning_modules.components.text_encoders import TextFeatures


def channels_at(resolution: int, *, image_size: int, base_channels: int, max_multiplier: int) -> int:
    """Channel width at a resolution: ``base * min(max_multiplier, image_size / resolution)``."""
    return base_channels * min(max_multiplier, image_size // resolution)


IMAGE_SIZES = [2**k for k in range(4, 11)]  # the backbones start (or end) at 4x4 and double per block


OUTPUT_ACTIVATIONS = ("none", "tanh")


def check_image_size(image_size: int, key: str = "data.image_size") -> int:
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"{key}={image_size}: the backbones double from 4x4, so allowed sizes are {IMAGE_SIZES}")
    return int(math.log2(image_size)) - 2


class GeneratorBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, resolution: int, fusion: Fusion):
        super().__init__()
        self.mod1 = fusion.modulation(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.mod2 = fusion.modulation(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.attention = fusion.attention(out_ch, resolution)

    def forward(self, h: torch.Tensor, cond: Condition) -> torch.Tensor:
        h = F.interpolate(h, scale_factor=2.0, mode="nearest")
        residual = self.conv2(self.mod2(self.conv1(self.mod1(h, cond)), cond))
        h = self.shortcut(h) + residual
        return self.attention(h, cond) if self.attention is not None else h


class Generator(nn.Module):
    """Noise + text features -> image (nominally in [-1, 1]).

    Args:
        image_size: output side, 16..1024 (a power of two).
        z_dim: noise size.
        text_dim, token_dim: sizes of the encoder's pooled vector and token features.
        fusion: a callable (Hydra partial) building the :class:`Fusion`.
        base_channels: width at full resolution; doubles per halving up to ``max_multiplier``.
        output_activation: ``none`` (linear RGB, clamped to [-1, 1] only when saved: a saturated
            tanh on a mostly black data set starves G of gradient) or ``tanh`` (DF-GAN's).
    """

    def __init__(
        self,
        *,
        image_size: int,
        z_dim: int,
        text_dim: int,
        token_dim: int,
        fusion: Callable[..., Fusion],
        base_channels: int = 32,
        max_multiplier: int = 8,
        output_activation: str = "none",
    ):
        super().__init__()
        check(type(self), {k: v for k, v in locals().items() if k not in ("self", "__class__")}, "model.generator")
        n_blocks = check_image_size(image_size)
        self.z_dim = z_dim
        self.image_size = image_size
        self.fusion = fusion(z_dim=z_dim, text_dim=text_dim, token_dim=token_dim)
        width = lambda res: channels_at(res, image_size=image_size, base_channels=base_channels,  # noqa: E731
                                        max_multiplier=max_multiplier)
        self.seed_channels = width(4)
        self.seed = nn.Linear(self.fusion.input_dim, self.seed_channels * 16)
        self.seed_attention = self.fusion.attention(self.seed_channels, 4)
        self.blocks = nn.ModuleList(
            GeneratorBlock(width(4 * 2**i), width(8 * 2**i), 8 * 2**i, self.fusion) for i in range(n_blocks)
        )
        self.to_rgb = nn.Sequential(nn.LeakyReLU(0.2), nn.Conv2d(width(image_size), 3, 3, padding=1),
                                    nn.Tanh() if output_activation == "tanh" else nn.Identity())

    @classmethod
    def config_problems(cls, values, key: str = "model.generator") -> list[str]:
        """What is wrong with these constructor values (see ``gan_ga_utils/checks.py``)."""
        p = Problems(values, key)
        p.choice("output_activation", OUTPUT_ACTIVATIONS)
        p.number("base_channels", 1, integer=True)
        p.number("max_multiplier", 1, integer=True)
        return p

    def forward(self, z: torch.Tensor, text: TextFeatures) -> torch.Tensor:
        cond = self.fusion.condition(z, text)
        h = self.seed(self.fusion.input(z, cond)).view(z.shape[0], self.seed_channels, 4, 4)
        if self.seed_attention is not None:
            h = self.seed_attention(h, cond)
        for block in self.blocks:
            h = block(h, cond)
        return self.to_rgb(h)
