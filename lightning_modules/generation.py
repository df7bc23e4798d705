"""Prompts -> PNGs from a training checkpoint, with the EMA generator (used by generate.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

import torch
from omegaconf import DictConfig
from PIL import Image

from gan_ga_utils.errors import GenerationError
from lightning_modules.loading import load_module
from lightning_modules.sampling import labelled_grid, sample_noise, save_png, side_by_side, to_uint8


def read_prompts(prompts: Sequence[str] | None, prompts_file: str | None, max_tokens: int | None = None) -> list[str]:
    items: list[tuple[str, str]] = [(f"prompts[{i}]", p) for i, p in enumerate(prompts or [])]
    if prompts_file:
        path = Path(prompts_file)
        if not path.is_file():
            raise GenerationError(f"prompts_file={str(path)!r}: no such file (one prompt per line)")
        lines = path.read_text(encoding="utf-8").splitlines()
        items += [(f"{path}:{n}", line) for n, line in enumerate(lines, 1) if line.strip()]
    if not items:
        raise GenerationError("no prompts: give prompts='[\"a red circle\", ...]' or prompts_file=FILE (one per line)")
    out = []
    for where, prompt in items:
        if not isinstance(prompt, str) or not prompt.strip():
            raise GenerationError(f"{where} is empty: every prompt needs some text")
        out.append(" ".join(prompt.split()))
    return out


def _slug(text: str, limit: int = 48) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:limit] or "prompt"


def generate(cfg: DictConfig) -> dict:
    prompts = read_prompts(cfg.get("prompts"), cfg.get("prompts_file"))
    if int(cfg.num_per_prompt) < 1:
        raise GenerationError(f"num_per_prompt={cfg.num_per_prompt}: must be >= 1")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    module = load_module(cfg.ckpt_path, device)
    too_long = [p for p in prompts if module.encoder.num_tokens(p) > module.encoder.max_length]
    for p in too_long:
        print(f"warning: prompt longer than encoder.max_length={module.encoder.max_length} tokens is truncated: {p!r}")
    z = sample_noise(int(cfg.num_per_prompt), module.z_dim, seed=int(cfg.seed), truncation=cfg.get("truncation"))
    rows = to_uint8(module.sample(prompts, z, batch_size=int(cfg.batch_size)))
    rows = rows.reshape(len(prompts), z.shape[0], *rows.shape[1:])
    out_dir = Path(cfg.out_dir)
    files = []
    for i, (prompt, row) in enumerate(zip(prompts, rows)):
        path = out_dir / f"{i:03d}_{_slug(prompt)}.png"
        save_png(Image.fromarray(side_by_side(row)), path)
        files.append({"prompt": prompt, "file": path.name})
    grid = save_png(labelled_grid(rows, prompts, scale=max(1, 64 // rows.shape[2])), out_dir / "grid.png")
    manifest = {"ckpt_path": str(cfg.ckpt_path), "seed": int(cfg.seed), "truncation": cfg.get("truncation"),
                "num_per_prompt": int(cfg.num_per_prompt), "images": files, "grid": grid.name}
    (out_dir / "prompts.json").write_text(json.dumps(manifest, indent=2))
    print(f"wrote {len(files)} prompt images and {grid} to {out_dir}")
    return manifest
