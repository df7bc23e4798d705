"""FID, KID and IS on the TF-compatible Inception, and the cache of real-image features.

Inception: torch-fidelity's ``FeatureExtractorInceptionV3`` in ``inception-v3-compat`` mode (the
TF-ported weights FID is defined with), fed uint8 images that it resizes to 299x299 with TF1-style
bilinear interpolation **without antialias**, so numbers compare with StyleGAN / LAFITE / DF-GAN
tables. The weights come from a local file (``inception_weights``); nothing downloads. One pass per
image gives the 2048-d pool features (FID, KID) and the 1008 unbiased logits (IS).
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import torch

from gan_ga_utils.errors import MetricsError
from gan_ga_utils.files import atomic_write, sha256_file
from lightning_modules.metrics.frechet import frechet_distance
from lightning_modules.sampling import uint8_pixels

INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
INCEPTION_FEATURES = ("2048", "logits_unbiased")
PROTOCOL = {"model": "inception-v3-compat (torch-fidelity FeatureExtractorInceptionV3)",
            "resize": "TF1-style bilinear to 299, no antialias", "input": "uint8"}
REAL_CACHE_FORMAT = 2
# data-config keys that never change which images are scored or their pixels: left out of the cache key
NOT_IMAGE_KEYS = frozenset({"batch_size", "num_workers", "pin_memory", "persistent_workers", "cache_dir", "cache_text",
                            "cache_dtype", "cache_batch_size", "report_dir", "sample_prompts", "augment_policy",
                            "negatives"})


def check_weights(weights: str | Path | None, key: str = "inception_weights") -> Path:
    """The Inception weights file, or a MetricsError naming ``key`` and where to get the file."""
    if not weights:
        raise MetricsError(f"{key} is not set: FID/KID/IS need the TF-compatible Inception "
                           f"weights file. Download {INCEPTION_URL} on a machine with internet, copy it here and "
                           f"pass {key}=PATH")
    if not Path(weights).is_file():
        raise MetricsError(f"{key}={str(weights)!r}: no such file. It is {INCEPTION_URL}")
    return Path(weights)


def load_inception(weights: str | Path | None):
    """The TF-compatible Inception-v3 feature extractor from a local weights file."""
    weights = check_weights(weights)
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    return FeatureExtractorInceptionV3("inception-v3-compat", list(INCEPTION_FEATURES),
                                       feature_extractor_weights_path=str(weights)).eval()


def weights_digest(weights: str | Path) -> str:
    """SHA-256 of the weights file (computed once per file version)."""
    stat = Path(weights).stat()
    return _digest(str(Path(weights).resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _digest(path: str, mtime_ns: int, size: int) -> str:
    return sha256_file(path)


@torch.no_grad()
def inception_features(inception, images: torch.Tensor, batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """images in [-1, 1] (or uint8 pixels, fed unchanged) -> (pool features [N, 2048], logits [N, 1008])
    in float64."""
    device = next(inception.parameters()).device
    pools, logits = [], []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size].to(device)
        pool, logit = inception(batch if batch.dtype == torch.uint8 else uint8_pixels(batch))
        pools.append(pool.double().cpu())
        logits.append(logit.double().cpu())
    return torch.cat(pools), torch.cat(logits)


def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Frechet Inception Distance between two sets of pool features."""
    return frechet_distance(real, fake)


def kid(real: torch.Tensor, fake: torch.Tensor, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (mean, std over subsets), cubic polynomial kernel as in the paper."""
    from torchmetrics.image.kid import poly_mmd

    size = min(subset_size, real.shape[0], fake.shape[0])
    gen = torch.Generator().manual_seed(seed)
    values = torch.stack([poly_mmd(real[torch.randperm(real.shape[0], generator=gen)[:size]],
                                   fake[torch.randperm(fake.shape[0], generator=gen)[:size]])
                          for _ in range(subsets)])
    return float(values.mean()), float(values.std())


def inception_score(logits: torch.Tensor, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """Inception Score (mean, std over ``splits``) as torch-fidelity computes it: the samples are
    shuffled with ``numpy.random.RandomState(seed).permutation`` first, so splits never follow the
    order the captions came in (class-sorted on CUB)."""
    from torch_fidelity.metric_isc import isc_features_to_metric

    splits = max(1, min(splits, logits.shape[0]))
    out = isc_features_to_metric(logits.double().cpu(), splits=splits, shuffle=True, rng_seed=seed)
    return out["inception_score_mean"], out["inception_score_std"]


def real_features_key(data: dict, *, split: str, count: int, subset_seed: int, image_size: int) -> dict:
    """What the Inception features of a split's real images depend on: the whole data config (less
    :data:`NOT_IMAGE_KEYS`), the split, the number of images, the seed of the subset and the size."""
    kept = {k: v for k, v in sorted(data.items()) if k not in NOT_IMAGE_KEYS}
    return {"format": REAL_CACHE_FORMAT, "data": kept, "split": split, "count": int(count),
            "subset_seed": int(subset_seed), "image_size": int(image_size)}


def real_features_path(key: dict, cache_dir: str | Path, weights: str | Path) -> Path:
    text = json.dumps({**key, "weights_sha256": weights_digest(weights)}, sort_keys=True, default=str)
    return Path(cache_dir) / "inception_real" / f"{hashlib.sha256(text.encode()).hexdigest()[:24]}.pt"


def load_real_features(key: dict, cache_dir: str | Path | None, weights: str | Path) -> torch.Tensor | None:
    """Cached Inception pool features of a split's real images (None when absent or damaged)."""
    if not cache_dir:
        return None
    path = real_features_path(key, cache_dir, weights)
    try:
        return torch.load(path, weights_only=True) if path.is_file() else None
    except Exception:  # noqa: BLE001 - damaged: computed again
        return None


def store_real_features(features: torch.Tensor, key: dict, cache_dir: str | Path | None, weights: str | Path) -> None:
    if not cache_dir:
        return
    with atomic_write(real_features_path(key, cache_dir, weights)) as tmp:
        torch.save(features, tmp)
