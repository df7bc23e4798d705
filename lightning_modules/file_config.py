"""A config read from a file is data: it may describe one of gan-ga's own models, never choose code.

A trained model is rebuilt from the config saved with it (a checkpoint's ``gan_ga.config``, an export's
``config.yaml``). Such a file may come from anywhere, so :func:`checked_file_config` keeps only what
gan-ga itself would write and refuses the rest, naming the file and the key:

* only the sections a model and its data are built from are kept: ``encoder``, ``fusion``,
  ``model``, ``data``, ``seed`` (the trainer, loggers and callbacks of the run are never rebuilt
  from a file and are dropped);
* a ``_target_`` may stand only where gan-ga's own configs put one (:data:`BUILDS`), naming one of
  the classes listed there for that place, and every other key of that node must be a parameter of
  that class; anywhere else a ``_target_`` (or ``_args_``) is refused. A plain value under a key the
  class no longer takes is a setting of an earlier version: it is dropped with a warning
  (:func:`drop_retired_settings`), and the weights, loaded strictly, decide whether the file fits;
* no interpolation (``${...}``: resolvers read the environment; gan-ga writes resolved configs);
* no ``trust_remote_code`` anywhere, and ``encoder.config_overrides`` may only change the sizes of an
  architecture (:data:`ENCODER_OVERRIDES`), to numbers;
* ``encoder.pretrained`` is a hub name, a folder or ``pkg://package/folder``; a package is looked up,
  never imported (``text_encoders.resolve_pretrained``).

A user's own command line (``python train.py encoder.config_overrides...=...``) is not a file and is
not limited by this module.
"""

from __future__ import annotations

import copy
import inspect
import warnings
from typing import Any

from gan_ga_utils.errors import UserError

KEPT_SECTIONS = ("encoder", "fusion", "model", "data", "seed")

_OPTIMIZERS = {f"torch.optim.{name}" for name in ("Adam", "AdamW", "SGD", "RMSprop", "Adamax", "NAdam", "RAdam")}
_SCHEDULERS = {f"torch.optim.lr_scheduler.{name}" for name in (
    "StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR", "LinearLR", "ConstantLR",
    "CosineAnnealingWarmRestarts", "OneCycleLR", "PolynomialLR")}

# config path -> the classes a file may build there (every ``_target_`` of conf/ is in this table:
# tests/test_file_config.py checks it)
BUILDS: dict[str, set[str]] = {
    "encoder": {"lightning_modules.components.text_encoders.HFTextEncoder"},
    "fusion": {f"lightning_modules.components.fusion.{name}"
               for name in ("ConcatFusion", "AffineFusion", "CrossAttentionFusion")},
    "model": {"lightning_modules.text_to_image_gan.TextToImageGAN", "lightning_modules.vae_gan.VAEGAN"},
    "model.generator": {"lightning_modules.components.generators.Generator"},
    "model.discriminator": {"lightning_modules.components.discriminators.Discriminator"},
    "model.augment": {"lightning_modules.components.augment.DiffAugment"},
    "model.image_encoder": {"lightning_modules.components.image_encoders.ImageEncoder"},
    "model.optimizer_g": _OPTIMIZERS,
    "model.optimizer_d": _OPTIMIZERS,
    "model.scheduler_g": _SCHEDULERS,
    "model.scheduler_d": _SCHEDULERS,
    "data": {"datamodules.shapes.ShapesDataModule", "datamodules.shapes_pairs.PairsShapesDataModule",
             "datamodules.coco.CocoDataModule",
             "datamodules.cub.CubDataModule", "datamodules.flickr8k.Flickr8kDataModule",
             "datamodules.folder.FolderDataModule", "datamodules.tars.WebDatasetDataModule",
             "datamodules.shards.ShardsDataModule"},
}

# Hydra's keys that only change how a listed class is called
_CALL_KEYS = {"_target_", "_partial_", "_convert_", "_recursive_"}

# keys of a Hugging Face model config a file may change: sizes and rates of the architecture
ENCODER_OVERRIDES = {
    "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "num_key_value_heads",
    "max_position_embeddings", "vocab_size", "type_vocab_size", "hidden_dropout_prob",
    "attention_probs_dropout_prob", "layer_norm_eps", "initializer_range", "hidden_act",
    "n_embd", "n_layer", "n_head", "n_inner", "n_positions", "resid_pdrop", "embd_pdrop", "attn_pdrop",
    "d_model", "d_ff", "d_kv", "num_layers", "num_heads", "dropout_rate", "projection_dim",
}


class FileConfigError(UserError, ValueError):
    """A file's config names code, or keys gan-ga would not write."""


class DroppedSettingWarning(UserWarning):
    """A file's config holds a plain setting its class no longer takes (written by an earlier version)."""


def _is_plain(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def drop_retired_settings(node: Any, path: str = "") -> list[str]:
    """Settings of an earlier version, removed in place and returned as ``path.key=value``: a key of a
    node gan-ga builds (:data:`BUILDS`) that its class no longer takes and that holds a plain value
    (a switch or a size of a removed variant). Dropping builds nothing; the weights are then loaded
    strictly, so a checkpoint whose removed part had weights is refused by the weight check.
    Anything else unknown stays and is refused by the checks below."""
    if not isinstance(node, dict):
        return []
    dropped = []
    target = node.get("_target_")
    if path in BUILDS and target in BUILDS[path]:
        known = parameters(target)
        if known is not None:
            gone = [k for k in node if k not in known and k not in _CALL_KEYS and _is_plain(node[k])]
            dropped += [f"{path}.{k}={node.pop(k)!r}" for k in gone]
    for key, value in node.items():
        if key not in _CALL_KEYS:
            dropped += drop_retired_settings(value, f"{path}.{key}" if path else str(key))
    return dropped


def parameters(target: str) -> set[str] | None:
    """The keyword parameters of a listed class (following ``**kwargs`` to its bases); None when
    the class takes any keyword."""
    from hydra.utils import get_class

    names: set[str] = set()
    for cls in get_class(target).__mro__:
        if "__init__" not in vars(cls):
            continue
        signature = inspect.signature(vars(cls)["__init__"])
        names |= {p.name for p in signature.parameters.values()
                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}
        if not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
            return names
        if cls.__module__.startswith(("torch.", "lightning.")):
            return None  # the base classes of the framework: their **kwargs are theirs
    return names


def _problems(node: Any, path: str) -> list[str]:
    problems: list[str] = []
    if isinstance(node, dict):
        target = node.get("_target_")
        if path in BUILDS and target is not None:
            if target not in BUILDS[path]:
                problems.append(f"{path}._target_={target!r}: a file may only build {sorted(BUILDS[path])} here")
            else:
                known = parameters(target)
                if known is not None:
                    unknown = sorted(str(k) for k in node if k not in known and k not in _CALL_KEYS)
                    problems += [f"{path}.{k}: not a parameter of {target}" for k in unknown]
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key in _CALL_KEYS and path not in BUILDS:
                problems.append(f"{where}: a file may not name code to build ({key} is allowed only where "
                                "gan-ga builds one of its own classes)")
            elif key == "_args_":
                problems.append(f"{where}: positional arguments are not accepted from a file")
            elif key == "trust_remote_code":
                problems.append(f"{where}: a file may not ask to run a model's own Python code")
            elif where == "encoder.config_overrides":
                problems += _override_problems(value, where)
            elif key not in _CALL_KEYS:
                problems += _problems(value, where)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            problems += _problems(value, f"{path}[{i}]")
    elif isinstance(node, str) and "${" in node:
        problems.append(f"{path}={node!r}: interpolations are not accepted from a file (gan-ga writes resolved configs)")
    return problems


def _override_problems(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, dict):
        return [f"{where}: must be a mapping of model config keys"]
    problems = []
    for key, item in value.items():
        if key not in ENCODER_OVERRIDES:
            problems.append(f"{where}.{key}: not an architecture size a file may change "
                            f"(allowed: {', '.join(sorted(ENCODER_OVERRIDES))})")
        elif isinstance(item, bool) or not isinstance(item, (int, float, str)) or (isinstance(item, str) and "${" in item):
            problems.append(f"{where}.{key}={item!r}: must be a number (or an activation name)")
    return problems


def checked_file_config(config: Any, source: str) -> dict:
    """``config`` as read from ``source`` (a file), reduced to :data:`KEPT_SECTIONS` and checked;
    raises :class:`FileConfigError` naming ``source`` and every refused key."""
    if not isinstance(config, dict):
        raise FileConfigError(f"{source}: its config is not a mapping")
    kept = {k: config[k] for k in KEPT_SECTIONS if k in config}
    missing = [k for k in ("encoder", "fusion", "model") if not isinstance(kept.get(k), dict)]
    kept = copy.deepcopy(kept)
    dropped = drop_retired_settings(kept)
    if dropped:
        warnings.warn(f"{source}: dropped settings this version no longer has (the variants measured and "
                      f"removed are in docs/experiments.md): {', '.join(dropped)}", DroppedSettingWarning, stacklevel=2)
    if missing:
        raise FileConfigError(f"{source}: its config has no {', '.join(missing)} section")
    problems = _problems(kept, "")
    for section in ("encoder", "fusion", "model"):
        if kept[section].get("_target_") is None:
            problems.append(f"{section}._target_: missing")
    if problems:
        raise FileConfigError(f"{source}: refused to build from this file's config: " + "; ".join(problems)
                              + ". A file may only describe one of gan-ga's own models; nothing in it may name "
                              "code to run.")
    return kept
