"""Fusion: how text enters the generator.

A fusion is an ``nn.Module`` that the generator builds (Hydra passes it as a partial) and asks for
three things:

* ``condition(z, text)``   -> :class:`Condition`, computed once per forward,
* ``input(z, cond)``       -> the vector fed to the generator's first (4x4) layer,
* ``modulation(c)``        -> a layer ``(h, cond) -> h`` used twice in every generator block,
* ``attention(c, res)``    -> an optional layer ``(h, cond) -> h`` after the block at resolution ``res``.

Variants:
``concat``           pooled text joins the noise at the input (DCGAN / GAN-INT-CLS); blocks use BatchNorm.
``affine``           DF-GAN deep fusion: every block is modulated (FiLM) by an MLP of [noise, pooled text];
                     with ``text_at_input`` the 4x4 seed is made from [noise, text] too, so the
                     layout can depend on the words from the first layer (DF-GAN: noise only).
``cross_attention``  GAN-GA: ``affine`` plus image features attending over the token features
                     (padding masked) at the resolutions named in ``attention_resolutions``
                     (4 = the 4x4 seed itself; ``model=gan_ga`` uses 8 and 16, which learned as
                     much per batch as 4, 8 and 16: docs/experiments.md, ablation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from lightning_modules.components.text_encoders import TextFeatures


@dataclass
class Condition:
    vector: torch.Tensor  # [B, cond_dim]: what modulation layers read
    tokens: torch.Tensor  # [B, L, D]
    mask: torch.Tensor  # [B, L] bool, True on real tokens


class Fusion(nn.Module):
    """Base class; see the module docstring for the contract."""

    def __init__(self, *, z_dim: int, text_dim: int, cond_dim: int = 256, use_noise: bool = True):
        super().__init__()
        self.z_dim = z_dim
        self.use_noise = use_noise
        # LayerNorm first: encoder outputs are small (~0.2 per dim) next to unit-variance noise
        self.text_proj = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, cond_dim), nn.LeakyReLU(0.2))
        self.cond_dim = cond_dim + (z_dim if use_noise else 0)

    def condition(self, z: torch.Tensor, text: TextFeatures) -> Condition:
        vector = self.text_proj(text.pooled)
        if self.use_noise:
            vector = torch.cat([z, vector], dim=1)
        return Condition(vector=vector, tokens=text.tokens, mask=text.mask)

    @property
    def input_dim(self) -> int:
        return self.z_dim

    def input(self, z: torch.Tensor, cond: Condition) -> torch.Tensor:
        return z

    def modulation(self, channels: int) -> nn.Module:
        raise NotImplementedError

    def attention(self, channels: int, resolution: int) -> nn.Module | None:
        return None


class Affine(nn.Module):
    """FiLM: ``gamma(c) * h + beta(c)``, gamma starting at 1 and beta at 0 (DF-GAN's affine)."""

    def __init__(self, channels: int, cond_dim: int, hidden: int):
        super().__init__()
        self.gamma = nn.Sequential(nn.Linear(cond_dim, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        self.beta = nn.Sequential(nn.Linear(cond_dim, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        nn.init.zeros_(self.gamma[-1].weight)
        nn.init.ones_(self.gamma[-1].bias)
        nn.init.zeros_(self.beta[-1].weight)
        nn.init.zeros_(self.beta[-1].bias)

    def forward(self, h: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        gamma = rearrange(self.gamma(vector), "b c -> b c 1 1")
        beta = rearrange(self.beta(vector), "b c -> b c 1 1")
        return gamma * h + beta


class AffineModulation(nn.Module):
    """DF-GAN's fusion block: (affine, LeakyReLU) twice."""

    def __init__(self, channels: int, cond_dim: int, hidden: int):
        super().__init__()
        self.affine1 = Affine(channels, cond_dim, hidden)
        self.affine2 = Affine(channels, cond_dim, hidden)

    def forward(self, h: torch.Tensor, cond: Condition) -> torch.Tensor:
        h = F.leaky_relu(self.affine1(h, cond.vector), 0.2)
        return F.leaky_relu(self.affine2(h, cond.vector), 0.2)


class BatchNormModulation(nn.Module):
    """Unconditional BatchNorm + ReLU: the DCGAN block, for fusions that condition at the input."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, h: torch.Tensor, cond: Condition) -> torch.Tensor:
        return F.relu(self.norm(h))


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d), keys where mask is False excluded) v``: [B, H, N, d] queries,
    [B, H, L, d] keys and values, a [B, 1, 1, L] bool mask (True: a real token)."""
    scores = torch.einsum("bhnd,bhld->bhnl", q, k) * q.shape[-1] ** -0.5
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.einsum("bhnl,bhld->bhnd", scores.softmax(-1).to(v.dtype), v)


class TokenCrossAttention(nn.Module):
    """Image positions attend over caption tokens; padding tokens are masked out.

    The output projection starts at zero, so the layer starts as the identity and learns how much
    word-level detail to add.

    The attention is written out (scores, softmax, weighted sum) rather than calling
    ``F.scaled_dot_product_attention``: with a few dozen keys, PyTorch's CPU flash kernel under bf16
    autocast takes 3-4x as long as the plain form, forward and backward
    (``benchmarks/attention_speed.py``); the two agree to bf16 rounding (tested).
    """

    def __init__(self, channels: int, token_dim: int, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.norm = nn.GroupNorm(num_groups=min(32, channels // 4) or 1, num_channels=channels)
        self.to_q = nn.Linear(channels, inner, bias=False)
        self.to_kv = nn.Sequential(nn.LayerNorm(token_dim), nn.Linear(token_dim, 2 * inner, bias=False))
        self.to_out = nn.Linear(inner, channels)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(self, h: torch.Tensor, cond: Condition) -> torch.Tensor:
        height, width = h.shape[-2:]
        x = rearrange(self.norm(h), "b c h w -> b (h w) c")
        q = rearrange(self.to_q(x), "b n (h d) -> b h n d", h=self.heads)
        k, v = rearrange(self.to_kv(cond.tokens), "b l (two h d) -> two b h l d", two=2, h=self.heads)
        out = masked_attention(q, k, v, rearrange(cond.mask, "b l -> b 1 1 l"))
        out = self.to_out(rearrange(out, "b h n d -> b n (h d)"))
        return h + rearrange(out, "b (h w) c -> b c h w", h=height, w=width)


class ConcatFusion(Fusion):
    """Pooled text concatenated with the noise at the generator input; BatchNorm blocks."""

    def __init__(self, *, z_dim: int, text_dim: int, token_dim: int, cond_dim: int = 128):
        super().__init__(z_dim=z_dim, text_dim=text_dim, cond_dim=cond_dim, use_noise=False)

    @property
    def input_dim(self) -> int:
        return self.z_dim + self.cond_dim

    def input(self, z: torch.Tensor, cond: Condition) -> torch.Tensor:
        return torch.cat([z, cond.vector], dim=1)

    def modulation(self, channels: int) -> nn.Module:
        return BatchNormModulation(channels)


class AffineFusion(Fusion):
    """DF-GAN deep fusion: each block modulated by an MLP of [noise, pooled text]."""

    def __init__(self, *, z_dim: int, text_dim: int, token_dim: int, cond_dim: int = 256, hidden: int = 256,
                 text_at_input: bool = False):
        super().__init__(z_dim=z_dim, text_dim=text_dim, cond_dim=cond_dim, use_noise=True)
        self.hidden = hidden
        self.text_at_input = text_at_input

    @property
    def input_dim(self) -> int:
        return self.cond_dim if self.text_at_input else self.z_dim

    def input(self, z: torch.Tensor, cond: Condition) -> torch.Tensor:
        return cond.vector if self.text_at_input else z  # the vector is [z, projected text]

    def modulation(self, channels: int) -> nn.Module:
        return AffineModulation(channels, self.cond_dim, self.hidden)


class CrossAttentionFusion(AffineFusion):
    """GAN-GA: affine deep fusion plus cross-attention over tokens at chosen resolutions."""

    def __init__(
        self,
        *,
        z_dim: int,
        text_dim: int,
        token_dim: int,
        cond_dim: int = 256,
        hidden: int = 256,
        text_at_input: bool = False,
        attention_resolutions: Sequence[int] = (8, 16),
        heads: int = 4,
        dim_head: int = 32,
    ):
        super().__init__(z_dim=z_dim, text_dim=text_dim, token_dim=token_dim, cond_dim=cond_dim, hidden=hidden,
                         text_at_input=text_at_input)
        self.token_dim = token_dim
        self.attention_resolutions = tuple(int(r) for r in attention_resolutions)
        self.heads = heads
        self.dim_head = dim_head

    def attention(self, channels: int, resolution: int) -> nn.Module | None:
        if resolution not in self.attention_resolutions:
            return None
        return TokenCrossAttention(channels, self.token_dim, self.heads, self.dim_head)
