"""A run config checked before any data is read or model built; every problem reported together.

Each component states the values it accepts in its own ``config_problems`` (see ``checks.py``);
:func:`validate` gathers them from every node of the config that names a class (``_target_``),
and adds only what involves several components or the machine: the image size against the
backbones, the attention resolutions against the image size, the token limit against the encoder,
the devices against this machine, and the Trainer's own keys.
"""

from __future__ import annotations

from typing import Any, Iterator

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from gan_ga_utils.checks import Problems
from gan_ga_utils.errors import ConfigError
from lightning_modules.components.generators import IMAGE_SIZES

PRECISIONS = ("auto", "32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true", "transformer-engine")


def _get(cfg: DictConfig, key: str, default: Any = None) -> Any:
    return OmegaConf.select(cfg, key, default=default, throw_on_missing=False)


def components(cfg: DictConfig, key: str = "") -> Iterator[tuple[str, type, dict]]:
    """(config path, class, constructor values) of every node with a ``_target_`` that is a class
    with ``config_problems``; values are resolved plain data (nested nodes as dicts)."""
    for name, node in cfg.items() if isinstance(cfg, DictConfig) else ():
        path = f"{key}.{name}" if key else str(name)
        if name == "hydra" or not isinstance(node, DictConfig):
            continue
        target = node.get("_target_")
        if isinstance(target, str):
            try:
                cls = get_class(target)
            except Exception:  # noqa: BLE001 - a function target, or a module not installed: built later
                cls = None
            if cls is not None and hasattr(cls, "config_problems"):
                values = OmegaConf.to_container(node, resolve=True, throw_on_missing=False)
                yield path, cls, {k: v for k, v in values.items() if not str(k).startswith("_")}
        yield from components(node, path)


def validate(cfg: DictConfig) -> None:
    problems: list[str] = []
    for path, cls, values in components(cfg):
        problems += cls.config_problems(values, path)

    def need(ok: bool, key: str, allowed: str) -> None:
        if not ok:
            problems.append(f"{key}={_get(cfg, key)!r}: {allowed}")

    size = _get(cfg, "data.image_size")
    need(size in IMAGE_SIZES, "data.image_size",
         f"the generator starts at 4x4 and doubles per block; allowed: {IMAGE_SIZES}")
    resolutions = _get(cfg, "fusion.attention_resolutions")
    if resolutions is not None and size in IMAGE_SIZES:
        allowed = [2**k for k in range(2, IMAGE_SIZES.index(size) + 5)]
        need(all(r in allowed for r in resolutions), "fusion.attention_resolutions",
             f"each must be a generator resolution (4 = the 4x4 seed, then each block's output) for "
             f"data.image_size={size}: {allowed}")
    limit = encoder_position_limit(cfg)
    max_length = _get(cfg, "encoder.max_length")
    if limit is not None and isinstance(max_length, int) and max_length > limit:
        need(False, "encoder.max_length", f"the encoder {_get(cfg, 'encoder.pretrained')!r} takes at most {limit} tokens "
             f"(its max_position_embeddings); set encoder.max_length<={limit}")
    devices_problem = device_problem(cfg)
    if devices_problem:
        problems.append(devices_problem)

    mmd = _get(cfg, "model.mmd_weight") or 0
    if isinstance(mmd, (int, float)) and mmd > 0:
        redraws = _get(cfg, "data.redraws")
        need(isinstance(redraws, int) and redraws >= 2, "data.redraws",
             f"model.mmd_weight={mmd!r} compares K fakes of a caption with K other renders of it: set data.redraws "
             f"to 2 or more (4 measured; a data set without redraws: model.mmd_weight=0)")
    need(str(_get(cfg, "trainer.precision")) in PRECISIONS, "trainer.precision", f"allowed: {list(PRECISIONS)}")
    for key in ("trainer.max_steps", "trainer.max_epochs"):
        value = _get(cfg, key)
        need(value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= -1), key,
             "must be an integer >= -1")
    run = Problems({"seed": _get(cfg, "seed")}, "")
    run.number("seed", 0, 2**32 - 1, integer=True)  # numpy's seed range
    trainer = Problems({k: _get(cfg, f"trainer.{k}") for k in ("log_every_n_steps", "val_check_interval")}, "trainer")
    trainer.number("log_every_n_steps", 1, integer=True)
    trainer.number("val_check_interval", 0, low_open=True)
    problems += run + trainer
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(dict.fromkeys(problems)))


def encoder_position_limit(cfg: DictConfig) -> int | None:
    """The encoder's token limit read from its local ``config.json`` (no weights loaded); None for hub
    names that are not on disk, and for models without absolute positions (T5)."""
    import json
    from pathlib import Path

    from lightning_modules.components.text_encoders import EncoderLoadError, position_limit, resolve_pretrained

    name = _get(cfg, "encoder.pretrained")
    if not isinstance(name, str):
        return None
    try:
        folder = Path(resolve_pretrained(name))
    except EncoderLoadError:
        return None  # reported with its own message when the encoder is built
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if config.get("model_type") == "clip":
        config = config.get("text_config") or {}
    overrides = _get(cfg, "encoder.config_overrides") or {}
    config.update(OmegaConf.to_container(overrides) if OmegaConf.is_config(overrides) else dict(overrides))
    return position_limit(config)


def device_problem(cfg: DictConfig) -> str | None:
    """``trainer.devices`` asking for more GPUs (or CPU processes) than this machine has."""
    import os

    import torch

    accelerator = str(_get(cfg, "trainer.accelerator", "auto"))
    devices = _get(cfg, "trainer.devices", 1)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if accelerator in ("gpu", "cuda") and gpus == 0:
        return (f"trainer.accelerator={accelerator!r}: no CUDA GPU is visible here; use trainer.accelerator=auto "
                "(or cpu)")
    if OmegaConf.is_list(devices) or isinstance(devices, (list, tuple)):
        wanted = [int(d) for d in devices]
        if accelerator in ("gpu", "cuda", "auto") and gpus and max(wanted) >= gpus:
            return f"trainer.devices={list(wanted)}: this machine has GPUs 0..{gpus - 1}"
        return None
    if devices in (-1, "auto"):
        return None
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        return f"trainer.devices={devices!r}: a positive number, a list of GPU ids, -1 or auto"
    use_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and gpus > 0)
    have = gpus if use_gpu else (os.cpu_count() or 1)
    if devices > have:
        kind = "GPUs" if use_gpu else "CPU cores (one process each)"
        return f"trainer.devices={devices}: this machine has {have} {kind}; use trainer.devices<={have}"
    return None
