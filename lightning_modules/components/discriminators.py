"""Discriminator: image -> D's feature maps (DF-GAN residual down blocks) and a text-aware head.

Two ways D reads the caption:

* the sentence head (DF-GAN's concat head, optionally with a projection term) reads the pooled
  sentence vector only;
* the word-region matcher (``word_matching``) reads every word: each word attends over the 4x4
  image regions (which carry a learned position embedding), and the caption matches the image when
  its words find regions that look like them (AttnGAN's DAMSM score, learned inside D). Its score
  of each judged pair is added to D's logit, and its image x caption similarity matrix is what the
  contrastive terms (XMC-GAN) compare.

:meth:`Discriminator.features` returns one :class:`DFeatures`; :meth:`Discriminator.judge` reads it.
Variants that were measured and did not pay (the matcher's own image tower, other word
aggregations and region maps, a sentence term in the matcher, fakes as contrastive negatives) are
described with their results in ``docs/experiments.md``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import repeat
from torch import nn

from gan_ga_utils.checks import Problems, check
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
    from the first steps. Given ``pooled_map`` (a finer D map, ``projection_ch`` wide) the projection
    reads that map max-pooled instead of the 4x4 map averaged: a small object's shape survives a
    max over 8x8 cells, not a mean over 4x4 ones (``benchmarks/tower_shape_probe.py``).
    """

    def __init__(self, feat_ch: int, text_dim: int, cond_dim: int, hidden_ch: int, projection: bool = True,
                 projection_ch: int | None = None):
        super().__init__()
        self.text_proj = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, cond_dim))
        self.net = nn.Sequential(
            nn.Conv2d(feat_ch + cond_dim, hidden_ch, 3, padding=1, bias=False),
            nn.LeakyReLU(0.2),
            nn.Conv2d(hidden_ch, 1, 4),
        )
        projection_ch = projection_ch or feat_ch
        self.embed = nn.Linear(cond_dim, projection_ch, bias=False) if projection else None
        self.scale = projection_ch**-0.5  # keeps D's gradients, and so the power-6 MA-GP, in range

    def forward(self, features: torch.Tensor, sentence: torch.Tensor,
                pooled_map: torch.Tensor | None = None) -> torch.Tensor:
        text = self.text_proj(sentence)
        cond = repeat(text, "b c -> b c h w", h=features.shape[2], w=features.shape[3])
        logits = self.net(torch.cat([features, cond], dim=1)).flatten()
        if self.embed is not None:
            pooled = (F.leaky_relu(features, 0.2).mean((2, 3)) if pooled_map is None
                      else F.leaky_relu(pooled_map, 0.2).amax((2, 3)))
            logits = logits + (pooled * self.embed(text)).sum(1) * self.scale
        return logits


def attended_cosine(regions: torch.Tensor, words: torch.Tensor, inverse_temperature: float,
                    eps: float = 1e-8) -> torch.Tensor:
    """For image ``j`` ([R, d] regions) and caption ``i`` ([L, d] words): each word attends over the
    regions (softmax of ``inverse_temperature`` x dot product) and scores the cosine between itself
    and what it attended to. Returns [B_img, B_txt, L].

    The attended context ``c = sum_r a_r x_r`` is never built ([B_img, B_txt, L, d], the largest
    tensor of D's step): ``c . w = sum_r a_r (x_r . w)`` reuses the attention logits, and
    ``|c|^2 = a^T G a`` uses the regions' Gram matrix ``G`` ([B_img, R, R]). The two sums are
    taken in float32 (or wider). Equal to ``F.cosine_similarity(einsum(a, x), w)``, tested."""
    acc = torch.promote_types(regions.dtype, torch.float32)
    dots = torch.einsum("jrd,ild->jilr", regions, words)  # x_r . w_l for every image, caption, word
    attn = (dots * inverse_temperature).softmax(-1).to(acc)
    dot = (attn * dots.to(acc)).sum(-1)
    gram = torch.einsum("jrd,jsd->jrs", regions, regions).to(acc)
    j, i, n_words, r = attn.shape
    squared = (torch.bmm(attn.reshape(j, i * n_words, r), gram).reshape(j, i, n_words, r) * attn).sum(-1)
    norm_c = squared.clamp_min(eps * eps).sqrt()
    norm_w = words.to(acc).norm(dim=-1).clamp_min(eps).unsqueeze(0)  # [1, B_txt, L]
    return (dot / (norm_c * norm_w)).to(regions.dtype)


class WordRegionMatcher(nn.Module):
    """Word-level image-caption similarity: ``similarity(regions, words)`` -> [images, captions].

    For caption ``i`` and image ``j``, each real word ``l`` attends over the image's regions
    (softmax of scaled dot products); its score is the cosine between the word and what it attended
    to. The caption's score (in [-1, 1]) is the mean of its words' scores with learned per-word
    weights (padding excluded)."""

    def __init__(self, feat_ch: int, token_dim: int, dim: int = 128, regions: int = 16, sharpness: float = 4.0,
                 detail_ch: int | None = None):
        super().__init__()
        self.region_proj = nn.Conv2d(feat_ch, dim, 1)
        # with ``detail_ch``: each region also reads the finer map max-pooled over its cells, where a
        # small object's shape survives (one region per object of a two-object scene)
        self.detail_proj = nn.Conv2d(detail_ch, dim, 1) if detail_ch else None
        self.position = nn.Parameter(torch.randn(regions, dim) * 0.5)
        self.word_proj = nn.Sequential(nn.LayerNorm(token_dim), nn.Linear(token_dim, dim))
        self.word_weight = nn.Linear(token_dim, 1)
        self.sharpness = sharpness  # inverse temperature of the word -> region attention
        self.scale = dim**-0.5

    def regions(self, features: torch.Tensor, detail: torch.Tensor | None = None) -> torch.Tensor:
        """[B, C, H, W] (and the finer map, with ``detail_ch``) -> [B, H*W, dim] region vectors,
        position included."""
        r = self.region_proj(F.leaky_relu(features, 0.2))
        if self.detail_proj is not None:
            pooled = F.adaptive_max_pool2d(F.leaky_relu(detail, 0.2), features.shape[-2:])
            r = r + self.detail_proj(pooled)
        r = r.flatten(2).transpose(1, 2)
        if r.shape[1] != self.position.shape[0]:
            raise ValueError(f"word matcher built for {self.position.shape[0]} regions, got {r.shape[1]}")
        return r + self.position

    def words(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, L, D] tokens -> word vectors [B, L, dim] and word weights [B, L] (0 on padding, sum 1)."""
        logits = self.word_weight(tokens).squeeze(-1).float()
        weight = logits.masked_fill(~mask, float("-inf")).softmax(-1)
        return self.word_proj(tokens), weight.to(tokens.dtype)

    def similarity(self, regions: torch.Tensor, words: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Every image with every caption: [B_img, B_txt]."""
        w, weight = words
        cos = attended_cosine(regions, w, self.scale * self.sharpness)  # [B_img, B_txt, L]
        return (cos * weight.unsqueeze(0)).sum(-1)


def down_tower(*, image_size: int, base_channels: int, max_multiplier: int, resolution: int = 4,
               residual_gain: float = 1.0):
    """The image trunk of D and the VAE-GAN's encoder: a 3x3 ``from_rgb``
    conv, then :class:`DiscriminatorBlock` s halving ``image_size`` down to ``resolution``.

    Returns ``(from_rgb, blocks, width)``; ``width(res)`` is the channel count at resolution ``res``
    (``base_channels`` at full resolution, doubling per halving up to ``base_channels *
    max_multiplier``). The callers keep the two modules as their own ``from_rgb`` and ``blocks``
    attributes, so their state-dict keys stay those of existing checkpoints."""
    width = lambda res: channels_at(res, image_size=image_size, base_channels=base_channels,  # noqa: E731
                                    max_multiplier=max_multiplier)
    n = check_image_size(image_size) - (resolution.bit_length() - 3)
    from_rgb = nn.Conv2d(3, width(image_size), 3, padding=1)
    blocks = nn.Sequential(*(DiscriminatorBlock(width(image_size // 2**i), width(image_size // 2 ** (i + 1)),
                                                residual_gain) for i in range(n)))
    return from_rgb, blocks, width


class DFeatures(NamedTuple):
    """What D reads of a batch of images: ``map``, the 4x4 map (the sentence head's and the word
    matcher's regions), and ``pooled``, the finer map the sentence projection reads max-pooled
    (``projection_resolution`` 8 or 16; None at 4, where it averages ``map``)."""

    map: torch.Tensor
    pooled: torch.Tensor | None = None


class Discriminator(nn.Module):
    """``features(images)`` then ``judge(features, sentence, ...)``; split so that the features of
    real images are computed once and judged against both the matching and the mismatched caption."""

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
        token_dim: int | None = None,
        word_matching: bool = False,
        match_dim: int = 128,
        projection_resolution: int = 4,
        match_detail: bool = False,
    ):
        super().__init__()
        check(type(self), {k: v for k, v in locals().items() if k not in ("self", "__class__")}, "model.discriminator")
        self.from_rgb, self.blocks, width = down_tower(image_size=image_size, base_channels=base_channels,
                                                       max_multiplier=max_multiplier, residual_gain=residual_gain)
        self.projection_resolution = projection_resolution
        self.head = TextConditionedHead(width(4), text_dim, cond_dim, hidden_ch=2 * base_channels, projection=projection,
                                        projection_ch=width(projection_resolution))
        self.matcher = WordRegionMatcher(width(4), token_dim or text_dim, match_dim,
                                         detail_ch=width(projection_resolution) if match_detail else None
                                         ) if word_matching else None
        self.match_gain = nn.Parameter(torch.ones(1)) if word_matching else None

    @classmethod
    def config_problems(cls, values, key: str = "model.discriminator") -> list[str]:
        """What is wrong with these constructor values (see ``gan_ga_utils/checks.py``)."""
        p = Problems(values, key)
        for name in ("base_channels", "max_multiplier", "cond_dim", "match_dim"):
            p.number(name, 1, integer=True)
        p.number("residual_gain", 0)
        size = values.get("image_size")
        allowed = [r for r in (4, 8, 16) if size is None or r < size]
        p.need(values.get("projection_resolution", 4) in allowed, "projection_resolution",
               f"the resolution of D's feature map that the sentence projection reads (4: the 4x4 map averaged; "
               f"finer: that map max-pooled): {allowed}")
        p.need(not values.get("match_detail", False) or values.get("projection_resolution", 4) != 4, "match_detail",
               "the word matcher's regions read the finer map the sentence projection reads: set "
               f"{key}.projection_resolution to 8 or 16")
        return p

    def features(self, images: torch.Tensor) -> DFeatures:
        """D's feature maps of ``images`` (:class:`DFeatures`)."""
        h = self.from_rgb(images)
        pooled_map = None
        for block in self.blocks:
            h = block(h)
            if self.projection_resolution != 4 and h.shape[-1] == self.projection_resolution:
                pooled_map = h
        return DFeatures(h, pooled_map)

    def judge(self, features: DFeatures, sentence: torch.Tensor, tokens: torch.Tensor | None = None,
              mask: torch.Tensor | None = None, mismatch: torch.Tensor | None = None):
        """Judges image ``i`` with caption ``i`` and, when ``mismatch`` (an index per image) is given,
        with caption ``mismatch[i]``. There may be more captions than images (extra negatives after
        the B matching ones). Returns (logits [B], mismatched logits [B] or None, similarity
        [B, captions] of the word matcher or None). The matcher's score of each judged pair is added
        to its logit."""
        n = features.map.shape[0]
        logits = self.head(features.map, sentence[:n], features.pooled)
        wrong = self.head(features.map, sentence[mismatch], features.pooled) if mismatch is not None else None
        if self.matcher is None or tokens is None:
            return logits, wrong, None
        sim = self.matcher.similarity(self.matcher.regions(features.map, features.pooled),
                                      self.matcher.words(tokens, mask))
        logits = logits + self.match_gain * sim[:, :n].diagonal()
        if mismatch is not None:
            wrong = wrong + self.match_gain * sim.gather(1, mismatch[:, None]).squeeze(1)
        return logits, wrong, sim

    def forward(self, images: torch.Tensor, sentence: torch.Tensor, tokens: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """D's logit of each (image, caption) pair."""
        return self.judge(self.features(images), sentence, tokens, mask)[0]
