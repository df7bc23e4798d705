"""gan-ga's Python API: load a trained model, generate images from captions.

    import lightning_modules
    model = lightning_modules.load("RUN/checkpoints/last.ckpt")   # or an export folder, or hf://user/repo
    images = model.generate(["a red circle", "a small blue star"], num=8, seed=0)  # 16 PIL images

The images are those ``generate.py`` writes for the same checkpoint, prompts, ``seed`` and
``truncation``: image ``j`` of every prompt uses noise row ``j`` of ``seed``, so one seed shows
every prompt under the same noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

import torch
from PIL import Image

from gan_ga_utils.errors import GenerationError
from lightning_modules.loading import load_module
from lightning_modules.sampling import sample_noise, to_uint8


class TextToImage:
    """A loaded generator (the EMA generator of a checkpoint or an export) and its text encoder."""

    def __init__(self, module, source: str):
        self.module, self.source = module, source

    @property
    def image_size(self) -> int:
        return int(self.module.run_config["data"]["image_size"])

    @property
    def device(self) -> torch.device:
        return next(self.module.generator_ema.parameters()).device

    def to(self, device: str | torch.device) -> TextToImage:
        self.module.to(device)
        return self

    @torch.no_grad()
    def generate(self, prompts: str | Sequence[str], num: int = 1, seed: int = 0, *, truncation: float | None = None,
                 output: Literal["pil", "tensor"] = "pil", batch_size: int = 64) -> list[Image.Image] | torch.Tensor:
        """``num`` images of every prompt, prompt-major (all of the first prompt, then the next):
        a list of ``len(prompts) * num`` RGB PIL images, or with ``output="tensor"`` one float tensor
        ``[len(prompts) * num, 3, H, W]`` in [-1, 1] on the model's device. ``truncation``: noise
        drawn within that many standard deviations (sharper, less varied)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
            raise GenerationError(f"prompts={prompts!r}: give one or more non-empty captions")
        if int(num) < 1:
            raise GenerationError(f"num={num!r}: the number of images per prompt must be >= 1")
        if output not in ("pil", "tensor"):
            raise GenerationError(f"output={output!r}: 'pil' or 'tensor'")
        z = sample_noise(int(num), self.module.z_dim, seed=int(seed), truncation=truncation).to(self.device)
        images = self.module.sample([" ".join(p.split()) for p in prompts], z, batch_size=batch_size)
        if output == "tensor":
            return images
        return [Image.fromarray(pixels) for pixels in to_uint8(images)]


def load(source: str | Path, device: str = "auto") -> TextToImage:
    """A training checkpoint, an export folder or ``hf://user/repo[@revision]`` -> a model ready to
    generate, on ``device`` (``auto``: a GPU when there is one)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return TextToImage(load_module(source, device), str(source))
