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


RELATIVISTIC = "relativistic"  # R3GAN's RpGAN: D judges each real against its own caption's fake, in pairs

LOSSES: dict[str, AdversarialLoss] = {
    "hinge": AdversarialLoss(real=lambda x: F.relu(1 - x).mean(), fake=lambda x: F.relu(1 + x).mean(),
                             generator=lambda x: -x.mean()),
    "nonsaturating": AdversarialLoss(real=lambda x: F.softplus(-x).mean(), fake=lambda x: F.softplus(x).mean(),
                                     generator=lambda x: F.softplus(-x).mean()),
}
LOSS_NAMES = (*LOSSES, RELATIVISTIC)


def adversarial_loss(kind: str) -> AdversarialLoss:
    if kind not in LOSSES:
        raise ValueError(f"model.loss={kind!r} is not one of {list(LOSSES)}")
    return LOSSES[kind]


def fake_term(kind: str, real: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """D's term for pairs that should read fake (fakes, mismatched pairs, degraded reals);
    ``relativistic``: each against the real pair of the same index, ``softplus(logits - real)``."""
    if kind == RELATIVISTIC:
        return F.softplus(logits - real).mean()
    return adversarial_loss(kind).fake(logits)


def discriminator_loss(kind: str, real: torch.Tensor, fake: torch.Tensor, mismatched: torch.Tensor) -> dict:
    """``relativistic`` (R3GAN): each real pair must score above the fake of its caption and above
    the same image with its mismatched caption, ``softplus(other - real)``; pairs are by index."""
    terms = {"fake": fake_term(kind, real, fake), "mismatch": fake_term(kind, real, mismatched)}
    if kind == RELATIVISTIC:
        terms["total"] = 0.5 * (terms["fake"] + terms["mismatch"])
        return terms
    terms["real"] = adversarial_loss(kind).real(real)
    terms["total"] = terms["real"] + 0.5 * (terms["fake"] + terms["mismatch"])
    return terms


def generator_loss(kind: str, fake: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
    """``relativistic`` needs ``real``, D's logits of the real pairs of the same captions."""
    if kind == RELATIVISTIC:
        if real is None:
            raise ValueError("model.loss=relativistic: the generator loss needs the real pairs' logits")
        return F.softplus(real - fake).mean()
    return adversarial_loss(kind).generator(fake)


def zero_centered_penalty(logits: torch.Tensor, inputs: tuple[torch.Tensor, ...], *, weight: float) -> torch.Tensor:
    """R1 (real inputs) or R2 (fake inputs), R3GAN's regularisers: ``weight / 2 * E ||grad D||^2``
    over all ``inputs`` (the image and, matching-aware, the sentence vector)."""
    grads = torch.autograd.grad(logits.sum(), inputs, create_graph=True)
    return 0.5 * weight * torch.cat([g.flatten(1) for g in grads], dim=1).pow(2).sum(1).mean()


def matching_aware_gradient_penalty(
    logits: torch.Tensor, images: torch.Tensor, sentence: torch.Tensor, *, weight: float, power: float
) -> torch.Tensor:
    """DF-GAN's MA-GP: ``weight * E[||grad_(image, sentence) D(image, sentence)||^power]`` on real,
    matching pairs, which smooths D around the real data *and* its captions."""
    grads = torch.autograd.grad(logits.sum(), (images, sentence), create_graph=True)
    flat = torch.cat([g.flatten(1) for g in grads], dim=1)
    return weight * flat.norm(2, dim=1).pow(power).mean()


def contrastive_loss(similarity: torch.Tensor, matches: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE over a batch's image x caption similarities [B, T] (XMC-GAN), image -> caption and
    caption -> image, averaged. Pair ``(i, i)`` is the positive; captions ``B..T-1`` are extra
    negatives (image -> caption only); a caption true of another image (``matches`` [B, T] True,
    ``i != t``: the same scene in other words, or one that leaves open what differs) is left out
    rather than counted as a negative."""
    n, t = similarity.shape
    eye = torch.eye(n, t, dtype=torch.bool, device=similarity.device)
    same = matches & ~eye
    logits = (similarity.float() / temperature).masked_fill(same, float("-inf"))
    target = torch.arange(n, device=similarity.device)
    by_caption = logits[:, :n].T
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(by_caption, target))
