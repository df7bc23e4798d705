"""Every user-facing config value checked before any data is read or model built.

All problems are gathered and reported together, each naming the key, the value and what is allowed.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from datamodules.coco import YEARS
from datamodules.flickr8k import SPLIT_SOURCES
from datamodules.text_cache import DTYPES
from lightning_modules.components.augment import POLICIES
from lightning_modules.components.generators import IMAGE_SIZES
from lightning_modules.components.text_encoders import POOLING_MODES, TRAIN_MODES
from lightning_modules.errors import ConfigError
from lightning_modules.losses import LOSSES

CACHE_DTYPES = tuple(DTYPES)
PRECISIONS = ("auto", "32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true", "transformer-engine")


def _get(cfg: DictConfig, key: str, default: Any = None) -> Any:
    return OmegaConf.select(cfg, key, default=default, throw_on_missing=False)


def validate(cfg: DictConfig) -> None:
    problems: list[str] = []

    def need(ok: bool, key: str, allowed: str) -> None:
        if not ok:
            problems.append(f"{key}={_get(cfg, key)!r}: {allowed}")

    def number(key: str, low: float | None = None, high: float | None = None, *, integer: bool = False,
               low_open: bool = False, high_open: bool = False) -> None:
        value = _get(cfg, key)
        if value is None:
            return
        kind = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind):
            problems.append(f"{key}={value!r}: must be {'an integer' if integer else 'a number'}")
            return
        bad_low = low is not None and (value <= low if low_open else value < low)
        bad_high = high is not None and (value >= high if high_open else value > high)
        if bad_low or bad_high:
            lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
            hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
            problems.append(f"{key}={value!r}: must be {' and '.join(x for x in (lo, hi) if x)}")

    size = _get(cfg, "data.image_size")
    need(size in IMAGE_SIZES, "data.image_size",
         f"the generator starts at 4x4 and doubles per block; allowed: {IMAGE_SIZES}")
    number("data.batch_size", 2, integer=True)  # mismatched pairs need a second caption
    number("data.num_workers", 0, integer=True)
    number("data.crop_scale", 1)
    number("data.max_caption_chars", 1, integer=True)
    number("data.cache_batch_size", 1, integer=True)
    if _get(cfg, "data.cache_dtype") is not None:
        need(_get(cfg, "data.cache_dtype") in CACHE_DTYPES, "data.cache_dtype", f"allowed: {list(CACHE_DTYPES)}")
    if _get(cfg, "data.split_source") is not None:
        need(_get(cfg, "data.split_source") in SPLIT_SOURCES, "data.split_source", f"allowed: {list(SPLIT_SOURCES)}")
    if _get(cfg, "data.year") is not None:
        need(_get(cfg, "data.year") in YEARS, "data.year", f"allowed: {list(YEARS)}")
    fractions = _get(cfg, "data.split_fractions")
    if fractions is not None:
        ok = all(isinstance(v, (int, float)) and 0 <= v < 1 for v in fractions.values()) and sum(fractions.values()) < 1
        need(ok, "data.split_fractions", "val and test fractions in [0, 1) that sum to less than 1 (train gets the rest)")
    policy = _get(cfg, "data.augment_policy")
    if policy is not None:
        names = [policy] if isinstance(policy, str) else list(policy)
        need(all(n in POLICIES for n in names), "data.augment_policy",
             f"a list of {list(POLICIES)}, e.g. data.augment_policy=[translation,cutout]; [] turns it off")
    number("model.augment.probability", 0, 1)

    need(_get(cfg, "encoder.pooling") in POOLING_MODES, "encoder.pooling", f"allowed: {list(POOLING_MODES)}")
    need(_get(cfg, "encoder.mode") in TRAIN_MODES, "encoder.mode", f"allowed: {list(TRAIN_MODES)}")
    number("encoder.max_length", 1, integer=True)
    if _get(cfg, "encoder.mode") == "finetune_last_n":
        number("encoder.finetune_last_n", 1, integer=True)
    if _get(cfg, "encoder.mode") == "lora":
        number("encoder.lora_r", 1, integer=True)

    need(_get(cfg, "model.loss") in LOSSES, "model.loss", f"allowed: {list(LOSSES)}")
    number("model.z_dim", 1, integer=True)
    number("model.n_critic", 1, integer=True)
    number("model.gp_weight", 0)
    number("model.gp_power", 0, low_open=True)
    number("model.gp_every", 1, integer=True)
    number("model.ema_beta", 0, 1)
    number("model.grad_clip_val", 0)
    number("model.samples_per_prompt", 1, integer=True)
    for net in ("generator", "discriminator"):
        number(f"model.{net}.base_channels", 1, integer=True)
        number(f"model.{net}.max_multiplier", 1, integer=True)
    for opt in ("optimizer_g", "optimizer_d"):
        number(f"model.{opt}.lr", 0, low_open=True)
        betas = _get(cfg, f"model.{opt}.betas")
        if betas is not None:
            need(len(betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas),
                 f"model.{opt}.betas", "two numbers in [0, 1)")
        need(not (_get(cfg, f"model.{opt}.fused") and _get(cfg, f"model.{opt}.foreach")), f"model.{opt}.fused",
             f"fused=true and foreach=true exclude each other: set model.{opt}.foreach=null")

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
    number("model.max_bad_batches", 1, integer=True)

    need(str(_get(cfg, "trainer.precision")) in PRECISIONS, "trainer.precision", f"allowed: {list(PRECISIONS)}")
    for key in ("trainer.max_steps", "trainer.max_epochs"):
        number(key, -1, integer=True)
    number("trainer.val_check_interval", 0, low_open=True)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


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
