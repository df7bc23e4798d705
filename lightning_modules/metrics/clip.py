"""CLIP score: how well images match their captions in a CLIP model's embedding space."""

from __future__ import annotations

from pathlib import Path

import torch

from gan_ga_utils.errors import MetricsError
from lightning_modules.sampling import uint8_pixels

DEFINITION = "mean over samples of max(100 * cos(image, caption), 0) (Hessel et al. 2021, torchmetrics' scale)"


def load_clip(model: str | Path | None):
    """(CLIPModel, CLIPProcessor) from a local folder or hub name (``clip_model``)."""
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
    """Per-sample CLIP score, ``max(100 * cos(image, caption), 0)``, float64. Computed with
    transformers directly: torchmetrics 1.9's CLIPScore expects ``get_image_features`` to return a
    tensor, which transformers 5 no longer does."""
    model, processor = clip
    device = next(model.parameters()).device
    out = []
    for start in range(0, images.shape[0], batch_size):
        batch = uint8_pixels(images[start : start + batch_size]).cpu()
        pixels = processor(images=list(batch), return_tensors="pt")["pixel_values"].to(device)
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
