"""Config -> objects, and the one loader of trained models.

* :func:`build` / :func:`build_module`: a Hydra node -> its object, the run config -> the
  LightningModule (encoder, fusion and model built together).
* :func:`load_module`: a training checkpoint *or* an export folder -> the module, in eval mode. Every
  entry point that reads a trained model (``generate.py``, ``evaluate.py``, ``export.py``, the
  benchmarks) goes through it. A file from elsewhere cannot run code: a checkpoint is read with
  ``weights_only=True`` and an export with safetensors + YAML (nothing is unpickled), and the config
  the module is rebuilt from may only describe one of gan-ga's own models (``file_config.py``).
  Nothing is used before it is verified: a checkpoint against the digest of its content and for
  non-finite weights, an export's files against the SHA-256 digests of its ``export.json``.
* Checkpoints leave out a frozen pretrained encoder; its weights come from ``encoder.pretrained``
  as during training (``TextToImageGAN.complete_state_dict``).

``export.py`` writes the folders read here (the file names below are the format).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from gan_ga_utils.errors import CheckpointError, ConfigError, ExportError, GenerationError, UserError
from gan_ga_utils.files import sha256_file
from lightning_modules.checkpointing import read_checkpoint
from lightning_modules.file_config import checked_file_config

if TYPE_CHECKING:
    from lightning_modules.text_to_image_gan import TextToImageGAN

# An export folder (written by lightning_modules/export.py)
GENERATOR_FILE = "generator_ema.safetensors"
ENCODER_FILE = "encoder.safetensors"
CONFIG_FILE = "config.yaml"
INFO_FILE = "export.json"


def build(node: DictConfig, **kwargs: Any) -> Any:
    """``instantiate``, with a constructor's own error (which names the key) raised as it is, not
    wrapped in Hydra's InstantiationException; a constructor's ValueError becomes a ConfigError."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        if isinstance(cause, ValueError):
            raise ConfigError(str(cause)) from cause
        raise


def resolved_config(cfg: DictConfig) -> dict:
    """The run's config as plain data, interpolations resolved, Hydra's own node left out."""
    return {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
            for k, v in cfg.items() if k != "hydra"}


def build_module(cfg: DictConfig, encoder=None) -> TextToImageGAN:
    """The LightningModule of a run config (``encoder``, ``fusion`` and ``model`` groups); ``encoder``:
    the run's text encoder when the caller built it already (``training.py`` hands the same one to
    the data module), else built from ``cfg.encoder``."""
    encoder = build(cfg.encoder) if encoder is None else encoder
    module = build(cfg.model, encoder=encoder, fusion=build(cfg.fusion))
    module.run_config = resolved_config(cfg)
    return module


def is_export(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / GENERATOR_FILE).is_file()


HF_PREFIX = "hf://"


def resolve_source(source: str | Path) -> Path:
    """A local path as given, or ``hf://user/repo[@revision]``: that Hugging Face Hub repository (an
    export folder, ``export.py push_to_hub=...``) through ``huggingface_hub``, which downloads it
    once into its cache; offline (``HF_HUB_OFFLINE=1``, or no network) the cached copy is used."""
    text = str(source)
    if not text.startswith(HF_PREFIX):
        return Path(text)
    repo, _, revision = text[len(HF_PREFIX):].partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise GenerationError(f"{text!r}: a Hub model is hf://user/repo or hf://user/repo@revision")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, revision=revision or None, library_name="gan-ga"))
    except Exception as err:  # noqa: BLE001 - network, auth, missing repo: one message with the fix
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise GenerationError(f"{text!r}: could not fetch it from the Hugging Face Hub ({type(err).__name__}: "
                              f"{first}). Check the name and your access (`huggingface-cli login`); offline, "
                              "a copy fetched before is used (HF_HUB_OFFLINE=1)") from err


def load_module(ckpt_path: str | Path, device: str | torch.device = "cpu") -> TextToImageGAN:
    """A training checkpoint (``RUN/checkpoints/last.ckpt``), an export folder or ``hf://user/repo``
    (an export folder on the Hub, :func:`resolve_source`) -> the module on ``device`` in eval mode.
    Raises :class:`GenerationError` naming ``ckpt_path`` and the fix."""
    path = resolve_source(ckpt_path)
    if path.is_dir():
        try:
            return load_exported(path, device)
        except ExportError as err:
            raise GenerationError(f"ckpt_path={str(path)!r}: {err}") from err
    if not path.is_file():
        raise GenerationError(f"ckpt_path={str(path)!r}: no such file or export folder "
                              "(a run writes RUN/checkpoints/last.ckpt; export.py writes a folder)")
    try:
        checkpoint = read_checkpoint(path)
    except CheckpointError as err:
        raise GenerationError(f"ckpt_path: {err}") from err
    meta = checkpoint["gan_ga"] if isinstance(checkpoint["gan_ga"], dict) else None
    if not meta or not meta.get("config"):
        raise GenerationError(f"ckpt_path={str(path)!r}: not a gan-ga checkpoint (it holds no 'gan_ga' config)")
    config = checked_file_config(meta["config"], f"{path} (gan_ga.config)")
    module = build_module(OmegaConf.create(config))
    state = checkpoint["state_dict"]
    module.complete_state_dict(state)
    try:
        module.load_state_dict(state)
    except RuntimeError as err:  # the weights do not fit the architecture the config describes
        raise GenerationError(f"ckpt_path={str(path)!r}: its weights do not fit the model its config describes "
                              f"({_first_lines(err)})") from err
    return module.to(device).eval()


def _first_lines(err: BaseException, n: int = 3) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return " ".join(lines[:n])[:400]


def load_exported(folder: str | Path, device: str | torch.device = "cpu") -> TextToImageGAN:
    """The module rebuilt from an export folder's ``config.yaml`` with its safetensors weights."""
    from safetensors.torch import load_file

    folder = Path(folder)
    missing = [name for name in (GENERATOR_FILE, CONFIG_FILE) if not (folder / name).is_file()]
    if missing:
        raise ExportError(f"{folder}: not a gan-ga export folder (missing {', '.join(missing)}; "
                          "write one with `python export.py ckpt_path=RUN/checkpoints/last.ckpt out=DIR`)")
    verify_export(folder)
    try:
        config = OmegaConf.to_container(OmegaConf.load(folder / CONFIG_FILE), resolve=False)
        weights = load_file(str(folder / GENERATOR_FILE))
        encoder = load_file(str(folder / ENCODER_FILE)) if (folder / ENCODER_FILE).is_file() else None
    except Exception as err:  # noqa: BLE001 - truncated or foreign files
        raise ExportError(f"{folder}: damaged export ({type(err).__name__}: {err})") from err
    module = build_module(OmegaConf.create(checked_file_config(config, str(folder / CONFIG_FILE))))
    try:
        module.generator_ema.load_state_dict(weights)
        module.generator.load_state_dict(weights)  # the exported average is the generator from now on
        if encoder is not None:
            module.encoder.load_state_dict(encoder)
    except RuntimeError as err:
        raise ExportError(f"{folder}: its weights do not fit the model its {CONFIG_FILE} describes "
                          f"({_first_lines(err)})") from err
    if encoder is None and module.encoder.weights_in_checkpoint:
        raise ExportError(f"{folder}: the encoder was trained but {ENCODER_FILE} is missing")
    return module.to(device).eval()


def verify_export(folder: Path) -> None:
    """Every file of an export folder against the SHA-256 digest its ``export.json`` lists; raises
    :class:`ExportError` naming the file that differs, is missing or is not listed."""
    import json

    try:
        info = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
        listed = dict(info["files"])
    except FileNotFoundError:
        raise ExportError(f"{folder / INFO_FILE}: missing: the export's files cannot be verified "
                          "(write the export again with export.py)") from None
    except (ValueError, KeyError, TypeError) as err:
        raise ExportError(f"{folder / INFO_FILE}: unreadable ({type(err).__name__}: {err})") from err
    for name in (GENERATOR_FILE, ENCODER_FILE, CONFIG_FILE):
        present = (folder / name).is_file()
        if present and name not in listed:
            raise ExportError(f"{folder / name}: not listed in {INFO_FILE}: refused (an export's files are all listed "
                              "with their digests)")
        if name in listed and not present:
            raise ExportError(f"{folder / name}: missing ({INFO_FILE} lists it)")
        if present and sha256_file(folder / name) != listed[name]:
            raise ExportError(f"{folder / name}: damaged: its SHA-256 differs from the one in {INFO_FILE} "
                              "(a changed byte: a bad copy, disk or tampering)")
