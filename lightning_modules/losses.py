"""Adversarial losses and penalties.

D sees three kinds of pairs: (real image, its caption) -> real, (fake, caption) -> fake and
(real image, another image's caption) -> fake (matching-aware). Fake and mismatched terms share
the "fake" half of the loss, as in DF-GAN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("hinge", "nonsaturating")


def discriminator_loss(kind: str, real: torch.Tensor, fake: torch.Tensor, mismatched: torch.Tensor) -> dict:
    if kind == "hinge":
        terms = {"real": F.relu(1 - real).mean(), "fake": F.relu(1 + fake).mean(), "mismatch": F.relu(1 + mismatched).mean()}
    elif kind == "nonsaturating":
        terms = {"real": F.softplus(-real).mean(), "fake": F.softplus(fake).mean(), "mismatch": F.softplus(mismatched).mean()}
    else:
        raise ValueError(f"model.loss={kind!r} is not one of {LOSSES}")
    terms["total"] = terms["real"] + 0.5 * (terms["fake"] + terms["mismatch"])
    return terms


def generator_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    if kind == "hinge":
        return -fake.mean()
    if kind == "nonsaturating":
        return F.softplus(-fake).mean()
    raise ValueError(f"model.loss={kind!r} is not one of {LOSSES}")


def matching_aware_gradient_penalty(
    logits: torch.Tensor, images: torch.Tensor, sentence: torch.Tensor, *, weight: float, power: float
) -> torch.Tensor:
    """DF-GAN's MA-GP: ``weight * E[||grad_(image, sentence) D(image, sentence)||^power]`` on real,
    matching pairs, which smooths D around the real data *and* its captions."""
    grads = torch.autograd.grad(logits.sum(), (images, sentence), create_graph=True)
    flat = torch.cat([g.flatten(1) for g in grads], dim=1)
    return weight * flat.norm(2, dim=1).pow(power).mean()


def contrastive_loss(similarity: torch.Tensor, groups: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE over a batch's image x caption similarities [B, T] (XMC-GAN), image -> caption and
    caption -> image, averaged. Pair ``(i, i)`` is the positive; captions ``B..T-1`` are extra
    negatives (image -> caption only); pairs of equivalent captions (``groups`` [T] equal, ``i != j``)
    are left out rather than counted as negatives."""
    n, t = similarity.shape
    eye = torch.eye(n, t, dtype=torch.bool, device=similarity.device)
    same = (groups[:n, None] == groups[None, :]) & ~eye
    logits = (similarity.float() / temperature).masked_fill(same, float("-inf"))
    target = torch.arange(n, device=similarity.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, :n].T, target))
