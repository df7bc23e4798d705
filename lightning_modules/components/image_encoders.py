"""Image encoder of the VAE-GAN (``model=vaegan``): (real image, its caption) -> q(z | image, caption).

A discriminator-like backbone (the same residual down blocks to a 4x4 map) reads the image; the
caption's pooled vector, LayerNorm-ed and projected, joins the flattened map (CVAE-GAN's
conditioning), and an MLP gives the mean and log-variance of a diagonal Gaussian over the
generator's noise. The last layer starts at zero, so the encoder starts as the prior N(0, I): a
VAE-GAN at step 0 samples exactly what the GAN would.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gan_ga_utils.checks import Problems, check
from lightning_modules.components.discriminators import down_tower

LOGVAR_RANGE = (-30.0, 20.0)  # exp() of the log-variance stays finite in float32 and bf16


class ImageEncoder(nn.Module):
    """``forward(images [B,3,H,W], sentence [B,text_dim])`` -> ``(mu, logvar)``, each [B, z_dim].

    Args:
        image_size: input side (a power of two, 16..1024), as D's.
        z_dim: size of the generator's noise (the latent the encoder infers).
        text_dim: size of the caption's pooled vector.
        base_channels, max_multiplier: width at full resolution, doubling per halving up to
            ``base_channels * max_multiplier`` (D's rule).
        cond_dim: size the pooled caption is projected to.
        hidden: width of the MLP from [image features, caption] to (mu, logvar).
    """

    def __init__(self, *, image_size: int, z_dim: int, text_dim: int, base_channels: int = 16,
                 max_multiplier: int = 8, cond_dim: int = 128, hidden: int = 256):
        super().__init__()
        check(type(self), {k: v for k, v in locals().items() if k not in ("self", "__class__")}, "model.image_encoder")
        self.z_dim = z_dim
        self.from_rgb, self.blocks, width = down_tower(image_size=image_size, base_channels=base_channels,
                                                       max_multiplier=max_multiplier)
        self.text_proj = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, cond_dim))
        self.head = nn.Sequential(nn.Linear(width(4) * 16 + cond_dim, hidden), nn.LeakyReLU(0.2),
                                  nn.Linear(hidden, 2 * z_dim))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    @classmethod
    def config_problems(cls, values, key: str = "model.image_encoder") -> list[str]:
        """What is wrong with these constructor values (see ``gan_ga_utils/checks.py``)."""
        p = Problems(values, key)
        for name in ("base_channels", "max_multiplier", "cond_dim", "hidden"):
            p.number(name, 1, integer=True)
        return p

    def forward(self, images: torch.Tensor, sentence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.leaky_relu(self.blocks(self.from_rgb(images)), 0.2).flatten(1)
        mu, logvar = self.head(torch.cat([h, self.text_proj(sentence)], dim=1)).chunk(2, dim=1)
        return mu, logvar.clamp(*LOGVAR_RANGE)
