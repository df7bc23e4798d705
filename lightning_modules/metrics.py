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

from lightning_modules.errors import MetricsError
from lightning_modules.files import atomic_write

INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
INCEPTION_FEATURES = ("2048", "logits_unbiased")


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


def _real_features_path(key: dict, cache_dir: str | Path, weights: str | Path) -> Path:
    import json

    ident = hashlib.sha256(json.dumps({**key, "weights": file_sha256(weights)}, sort_keys=True).encode()).hexdigest()[:24]
    return Path(cache_dir) / "inception_real" / f"{ident}.pt"


def load_real_features(key: dict, cache_dir: str | Path | None, weights: str | Path) -> torch.Tensor | None:
    """Cached Inception pool features of a split's real images (None when absent or damaged), keyed by
    (data set, split, count, size, ...) and the weights file."""
    if not cache_dir:
        return None
    path = _real_features_path(key, cache_dir, weights)
    try:
        return torch.load(path, weights_only=True) if path.is_file() else None
    except Exception:  # noqa: BLE001 - damaged: computed again
        return None


def store_real_features(features: torch.Tensor, key: dict, cache_dir: str | Path | None, weights: str | Path) -> None:
    if not cache_dir:
        return
    path = _real_features_path(key, cache_dir, weights)
    with atomic_write(path) as tmp:
        torch.save(features, tmp)


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


def load_clip(model: str | Path | None):
    """(CLIPModel, CLIPProcessor) from a local folder or hub name (metrics.clip_model)."""
    from transformers import CLIPModel, CLIPProcessor

    if not model:
        raise MetricsError("clip_score needs clip_model=PATH_OR_NAME, e.g. a local copy of openai/clip-vit-base-patch32")
    try:
        return CLIPModel.from_pretrained(str(model)).eval(), CLIPProcessor.from_pretrained(str(model))
    except (OSError, ValueError) as err:
        raise MetricsError(f"clip_model={str(model)!r}: could not load a CLIP model and processor ({type(err).__name__}: "
                           f"{str(err).splitlines()[0] if str(err) else ''}). On a machine with internet run "
                           "`huggingface-cli download openai/clip-vit-base-patch32 --local-dir DIR`, copy DIR here "
                           "and pass clip_model=DIR") from err


@torch.no_grad()
def clip_scores(images: torch.Tensor, captions: list[str], clip, batch_size: int = 64) -> torch.Tensor:
    """Per-sample CLIP score, ``max(100 * cos(image, caption), 0)`` (Hessel et al. 2021, at torchmetrics'
    scale of 100). Computed with transformers directly: torchmetrics 1.9's CLIPScore expects
    ``get_image_features`` to return a tensor, which transformers 5 no longer does."""
    model, processor = clip
    device = next(model.parameters()).device
    out = []
    for start in range(0, images.shape[0], batch_size):
        batch = ((images[start : start + batch_size].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        pixels = processor(images=list(batch.cpu()), return_tensors="pt")["pixel_values"].to(device)
        text = processor(text=captions[start : start + batch_size], return_tensors="pt", padding=True, truncation=True,
                         max_length=model.config.text_config.max_position_embeddings)
        image_emb = _embedding(model.get_image_features(pixel_values=pixels))
        text_emb = _embedding(model.get_text_features(input_ids=text["input_ids"].to(device),
                                                      attention_mask=text["attention_mask"].to(device)))
        cos = torch.nn.functional.cosine_similarity(image_emb.float(), text_emb.float(), dim=-1)
        out.append((100 * cos).clamp_min(0).double().cpu())
    return torch.cat(out)


def _embedding(output) -> torch.Tensor:
    return output if torch.is_tensor(output) else output.pooler_output


def clip_score(images: torch.Tensor, captions: list[str], clip, batch_size: int = 64) -> float:
    return float(clip_scores(images, captions, clip, batch_size).mean())
