"""A trained generator as safetensors + YAML: what ``export.py`` writes and ``generate.py`` reads.

An export folder holds

* ``generator_ema.safetensors``  the EMA generator (the weights every sample and metric use);
* ``encoder.safetensors``        only when the text encoder was trained (LoRA / last-N): a frozen
  pretrained encoder is reloaded from ``encoder.pretrained`` as during training;
* ``config.yaml``                the run's resolved config (model, encoder, fusion, data);
* ``export.json``                provenance: source checkpoint and its SHA-256, batches trained,
  file digests.

Loading reads tensors with :func:`safetensors.torch.load_file` and YAML with OmegaConf: nothing is
unpickled, so an export from elsewhere cannot run code.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

GENERATOR_FILE = "generator_ema.safetensors"
ENCODER_FILE = "encoder.safetensors"
CONFIG_FILE = "config.yaml"
INFO_FILE = "export.json"


class ExportError(ValueError):
    """Bad export.py input or an incomplete export folder; the message names the path."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _plain(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors wants contiguous tensors that share no memory."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def export(ckpt_path: str | Path, out_dir: str | Path) -> Path:
    """Write the EMA generator of a training checkpoint to ``out_dir`` (created; files replaced)."""
    from lightning_modules.generation import GenerationError, load_module

    try:
        module = load_module(ckpt_path, "cpu")
    except GenerationError as err:
        raise ExportError(str(err)) from err
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {GENERATOR_FILE: _plain(module.generator_ema.state_dict())}
    if module.encoder.weights_in_checkpoint:
        files[ENCODER_FILE] = _plain(module.encoder.state_dict())
    for name, tensors in files.items():
        tmp = out / f".{name}.tmp"
        save_file(tensors, str(tmp), metadata={"format": "gan-ga", "part": name.split(".")[0]})
        tmp.replace(out / name)
    (out / CONFIG_FILE).write_text(OmegaConf.to_yaml(OmegaConf.create(module.run_config)))
    info = {"format": "gan-ga export v1", "source_checkpoint": str(ckpt_path),
            "source_sha256": _sha256(Path(ckpt_path)), "batches_trained": int(module.batches_seen),
            "files": {name: _sha256(out / name) for name in (*files, CONFIG_FILE)}}
    (out / INFO_FILE).write_text(json.dumps(info, indent=2))
    return out


def export_task(cfg) -> Path:
    """export.py's work: ``ckpt_path`` and ``out`` from the config."""
    out = export(cfg.ckpt_path, cfg.out)
    print(f"exported the EMA generator of {cfg.ckpt_path} to {out}")
    return out


def is_export(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / GENERATOR_FILE).is_file()


def load_exported(folder: str | Path, device: str | torch.device = "cpu"):
    """The module rebuilt from ``config.yaml`` with the exported weights (no unpickling)."""
    from lightning_modules.training import build_module

    folder = Path(folder)
    missing = [name for name in (GENERATOR_FILE, CONFIG_FILE) if not (folder / name).is_file()]
    if missing:
        raise ExportError(f"{folder}: not a gan-ga export folder (missing {', '.join(missing)}; "
                          "write one with `python export.py ckpt_path=RUN/checkpoints/last.ckpt out=DIR`)")
    try:
        config = OmegaConf.load(folder / CONFIG_FILE)
        weights = load_file(str(folder / GENERATOR_FILE))
        encoder = load_file(str(folder / ENCODER_FILE)) if (folder / ENCODER_FILE).is_file() else None
    except Exception as err:  # noqa: BLE001 - truncated or foreign files
        raise ExportError(f"{folder}: damaged export ({type(err).__name__}: {err})") from err
    module = build_module(config)
    module.generator_ema.load_state_dict(weights)
    module.generator.load_state_dict(weights)  # the exported average is the generator from now on
    if encoder is not None:
        module.encoder.load_state_dict(encoder)
    elif module.encoder.weights_in_checkpoint:
        raise ExportError(f"{folder}: the encoder was trained but {ENCODER_FILE} is missing")
    return module.to(device).eval()
