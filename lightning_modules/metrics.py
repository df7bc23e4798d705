"""Image metrics with a stated protocol: FID / KID / IS (TF-compatible Inception) and shapes caption accuracy.

Inception protocol: torchmetrics' ``NoTrainInceptionV3`` in ``inception-v3-compat`` mode (the
TF-ported weights FID is defined with), fed uint8 images resized to 299x299 with TF1-style bilinear
interpolation **without antialias**, so numbers compare with StyleGAN / LAFITE style FID. The
weights come from a local file (``metrics.inception_weights``); nothing downloads. One Inception
pass per image set gives the 2048-d pool features (FID, KID) and the logits (IS).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
INCEPTION_FEATURES = ("2048", "logits_unbiased")


class MetricsError(ValueError):
    """A metric cannot run as configured; the message names the key and the fix."""


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_inception(weights: str | Path | None):
    """The TF-compatible Inception-v3 feature extractor from a local weights file."""
    if not weights:
        raise MetricsError("metrics.inception_weights is not set: FID/KID/IS need the TF-compatible Inception "
                           f"weights file. Download {INCEPTION_URL} on a machine with internet, copy it here and "
                           "pass metrics.inception_weights=PATH")
    if not Path(weights).is_file():
        raise MetricsError(f"metrics.inception_weights={str(weights)!r}: no such file. It is {INCEPTION_URL}")
    from torchmetrics.image.fid import NoTrainInceptionV3

    return NoTrainInceptionV3(name="inception-v3-compat", features_list=list(INCEPTION_FEATURES),
                              feature_extractor_weights_path=str(weights), antialias=False).eval()


@torch.no_grad()
def inception_features(inception, images: torch.Tensor, batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """images in [-1, 1] -> (pool features [N, 2048], logits [N, 1008]) in float64."""
    device = next(inception.parameters()).device
    pools, logits = [], []
    for start in range(0, images.shape[0], batch_size):
        batch = ((images[start : start + batch_size].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        pool, logit = inception._torch_fidelity_forward(batch.to(device))  # every feature of one pass
        pools.append(pool.double().cpu())
        logits.append(logit.double().cpu())
    return torch.cat(pools), torch.cat(logits)


def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    from torchmetrics.image.fid import _compute_fid

    mu_r, mu_f = real.mean(0), fake.mean(0)
    return float(_compute_fid(mu_r, torch.cov(real.T), mu_f, torch.cov(fake.T)))


def kid(real: torch.Tensor, fake: torch.Tensor, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (mean, std over subsets), cubic polynomial kernel as in the paper."""
    from torchmetrics.image.kid import poly_mmd

    size = min(subset_size, real.shape[0], fake.shape[0])
    gen = torch.Generator().manual_seed(seed)
    values = torch.stack([poly_mmd(real[torch.randperm(real.shape[0], generator=gen)[:size]],
                                   fake[torch.randperm(fake.shape[0], generator=gen)[:size]])
                          for _ in range(subsets)])
    return float(values.mean()), float(values.std())


def inception_score(logits: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    probs = logits.softmax(-1)
    scores = []
    for chunk in probs.chunk(splits):
        marginal = chunk.mean(0, keepdim=True)
        scores.append((chunk * (chunk.clamp_min(1e-12).log() - marginal.clamp_min(1e-12).log())).sum(1).mean().exp())
    values = torch.stack(scores)
    return float(values.mean()), float(values.std()) if len(values) > 1 else 0.0
