"""Adversarial losses and penalties.

D sees three kinds of pairs: (real image, its caption) -> real, (fake, caption) -> fake and
(real image, another image's caption) -> fake (matching-aware). Fake and mismatched terms share
the "fake" half of the loss, as in DF-GAN.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F


class AdversarialLoss(NamedTuple):
    """One GAN loss: D's terms for logits that should read real / fake, and G's loss on its fakes."""

    real: Callable[[torch.Tensor], torch.Tensor]  # D: these logits should say "real"
    fake: Callable[[torch.Tensor], torch.Tensor]  # D: these logits should say "fake"
    generator: Callable[[torch.Tensor], torch.Tensor]  # G: its fakes' logits


LOSSES: dict[str, AdversarialLoss] = {
    "hinge": AdversarialLoss(real=lambda x: F.relu(1 - x).mean(), fake=lambda x: F.relu(1 + x).mean(),
                             generator=lambda x: -x.mean()),
    "nonsaturating": AdversarialLoss(real=lambda x: F.softplus(-x).mean(), fake=lambda x: F.softplus(x).mean(),
                                     generator=lambda x: F.softplus(-x).mean()),
}


def adversarial_loss(kind: str) -> AdversarialLoss:
    if kind not in LOSSES:
        raise ValueError(f"model.loss={kind!r} is not one of {list(LOSSES)}")
    return LOSSES[kind]


def discriminator_loss(kind: str, real: torch.Tensor, fake: torch.Tensor, mismatched: torch.Tensor) -> dict:
    loss = adversarial_loss(kind)
    terms = {"real": loss.real(real), "fake": loss.fake(fake), "mismatch": loss.fake(mismatched)}
    terms["total"] = terms["real"] + 0.5 * (terms["fake"] + terms["mismatch"])
    return terms


def generator_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    return adversarial_loss(kind).generator(fake)


def matching_aware_gradient_penalty(
    logits: torch.Tensor, images: torch.Tensor, sentence: torch.Tensor, *, weight: float, power: float
) -> torch.Tensor:
    """DF-GAN's MA-GP: ``weight * E[||grad_(image, sentence) D(image, sentence)||^power]`` on real,
    matching pairs, which smooths D around the real data *and* its captions."""
    grads = torch.autograd.grad(logits.sum(), (images, sentence), create_graph=True)
    flat = torch.cat([g.flatten(1) for g in grads], dim=1)
    return weight * flat.norm(2, dim=1).pow(power).mean()


def contrastive_loss(similarity: torch.Tensor, groups: torch.Tensor, temperature: float,
                     fake_similarity: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE over a batch's image x caption similarities [B, T] (XMC-GAN), image -> caption and
    caption -> image, averaged. Pair ``(i, i)`` is the positive; captions ``B..T-1`` are extra
    negatives (image -> caption only); pairs of equivalent captions (``groups`` [T] equal, ``i != j``)
    are left out rather than counted as negatives.

    ``fake_similarity`` [B_fake, T] (D's side only): generated images are extra negative *images*
    of every caption (caption -> image), the fake made from caption ``i`` included, so the matcher
    learns that a caption is found in real images only, and G cannot satisfy it with images that
    merely look like the words to an untrained eye."""
    n, t = similarity.shape
    eye = torch.eye(n, t, dtype=torch.bool, device=similarity.device)
    same = (groups[:n, None] == groups[None, :]) & ~eye
    logits = (similarity.float() / temperature).masked_fill(same, float("-inf"))
    target = torch.arange(n, device=similarity.device)
    by_caption = logits[:, :n].T
    if fake_similarity is not None:
        by_caption = torch.cat([by_caption, fake_similarity[:, :n].float().T / temperature], dim=1)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(by_caption, target))
