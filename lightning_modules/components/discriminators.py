"""Discriminator: image -> 4x4 features (DF-GAN residual down blocks) and a text-aware head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import repeat
from torch import nn

from lightning_modules.components.generators import channels_at, check_image_size


class DiscriminatorBlock(nn.Module):
    """Halves the resolution: learnable-gain residual + 1x1-conv average-pooled shortcut.

    DF-GAN starts the gain at 0 (D begins as a linear average-pooling net); a gain of 1 lets D see
    shapes from the first step, which matters for short runs."""

    def __init__(self, in_ch: int, out_ch: int, residual_gain: float = 1.0):
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 4, stride=2, padding=1, bias=False),
            nn.LeakyReLU(0.2),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
            nn.LeakyReLU(0.2),
        )
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.gain = nn.Parameter(torch.full((1,), float(residual_gain)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.shortcut(x), 2) + self.gain * self.residual(x)


class TextConditionedHead(nn.Module):
    """Judges (features, sentence).

    DF-GAN's head: the projected sentence is tiled over the 4x4 map, concatenated, and convolved to
    one logit. With ``projection`` a projection-discriminator term (Miyato & Koyama) adds the inner
    product of the pooled image features with the projected sentence, which makes D use the text
    from the first steps.
    """

    def __init__(self, feat_ch: int, text_dim: int, cond_dim: int, hidden_ch: int, projection: bool = True):
        super().__init__()
        self.text_proj = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, cond_dim))
        self.net = nn.Sequential(
            nn.Conv2d(feat_ch + cond_dim, hidden_ch, 3, padding=1, bias=False),
            nn.LeakyReLU(0.2),
            nn.Conv2d(hidden_ch, 1, 4),
        )
        self.embed = nn.Linear(cond_dim, feat_ch, bias=False) if projection else None
        self.scale = feat_ch**-0.5  # keeps D's gradients, and so the power-6 MA-GP, in range

    def forward(self, features: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        text = self.text_proj(sentence)
        cond = repeat(text, "b c -> b c h w", h=features.shape[2], w=features.shape[3])
        logits = self.net(torch.cat([features, cond], dim=1)).flatten()
        if self.embed is not None:
            logits = logits + (F.leaky_relu(features, 0.2).mean((2, 3)) * self.embed(text)).sum(1) * self.scale
        return logits


class Discriminator(nn.Module):
    """``features(images)`` then ``head(features, sentence)``; split so that the features of real
    images are computed once and judged against both the matching and the mismatched caption."""

    def __init__(
        self,
        *,
        image_size: int,
        text_dim: int,
        base_channels: int = 32,
        max_multiplier: int = 8,
        cond_dim: int = 128,
        residual_gain: float = 1.0,
        projection: bool = True,
    ):
        super().__init__()
        n_blocks = check_image_size(image_size)
        width = lambda res: channels_at(res, image_size=image_size, base_channels=base_channels,  # noqa: E731
                                        max_multiplier=max_multiplier)
        self.from_rgb = nn.Conv2d(3, width(image_size), 3, padding=1)
        self.blocks = nn.Sequential(
            *(DiscriminatorBlock(width(image_size // 2**i), width(image_size // 2 ** (i + 1)), residual_gain)
              for i in range(n_blocks))
        )
        self.head = TextConditionedHead(width(4), text_dim, cond_dim, hidden_ch=2 * base_channels, projection=projection)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.from_rgb(images))

    def forward(self, images: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images), sentence)
