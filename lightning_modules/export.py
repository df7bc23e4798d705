"""A trained generator as safetensors + YAML: what ``export.py`` writes and ``generate.py`` reads.

An export folder holds

* ``generator_ema.safetensors``  the EMA generator (the weights every sample and metric use);
* ``encoder.safetensors``        only when the text encoder was trained (LoRA / last-N): a frozen
  pretrained encoder is reloaded from ``encoder.pretrained`` as during training;
* ``config.yaml``                the run's resolved config (model, encoder, fusion, data);
* ``export.json``                provenance: source checkpoint and its SHA-256, batches trained,
  file digests.

This module only writes; :func:`lightning_modules.loading.load_module` reads an export folder (and a
checkpoint) with safetensors and YAML: nothing is unpickled, so an export from elsewhere cannot run code.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from gan_ga_utils.errors import ExportError
from gan_ga_utils.files import atomic_write, sha256_file, write_text
from lightning_modules.loading import CONFIG_FILE, ENCODER_FILE, GENERATOR_FILE, INFO_FILE, is_export, load_module


def _plain(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors wants contiguous tensors that share no memory."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def export(ckpt_path: str | Path, out_dir: str | Path) -> Path:
    """Write the EMA generator of a training checkpoint to ``out_dir`` (created; files replaced)."""
    source = Path(ckpt_path)
    if is_export(source) or source.is_dir():
        raise ExportError(f"ckpt_path={str(source)!r} is a folder{' (already an export)' if is_export(source) else ''}: "
                          "export.py reads a training checkpoint, e.g. ckpt_path=RUN/checkpoints/last.ckpt")
    module = load_module(source, "cpu")
    out = Path(out_dir)
    files = {GENERATOR_FILE: _plain(module.generator_ema.state_dict())}
    if module.encoder.weights_in_checkpoint:
        files[ENCODER_FILE] = _plain(module.encoder.state_dict())
    for name, tensors in files.items():
        with atomic_write(out / name) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "gan-ga", "part": name.split(".")[0]})
    write_text(out / CONFIG_FILE, OmegaConf.to_yaml(OmegaConf.create(module.run_config)))
    info = {"format": "gan-ga export v1", "source_checkpoint": str(source),
            "source_sha256": sha256_file(source), "batches_trained": int(module.batches_seen),
            "files": {name: sha256_file(out / name) for name in (*files, CONFIG_FILE)}}
    write_text(out / INFO_FILE, json.dumps(info, indent=2))
    return out


def export_task(cfg) -> Path:
    """export.py's work: ``ckpt_path`` and ``out`` from the config."""
    out = export(cfg.ckpt_path, cfg.out)
    print(f"exported the EMA generator of {cfg.ckpt_path} to {out}")
    return out
