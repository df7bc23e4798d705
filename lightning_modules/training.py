"""Config -> objects -> fit. ``train.py`` is the Hydra entry; tests call :func:`run_training` directly."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, OmegaConf, open_dict

from gan_ga_utils.errors import ConfigError
from lightning_modules.checkpointing import AtomicCheckpointIO, resolve_resume
from lightning_modules.config_checks import validate
from lightning_modules.loading import build, build_module
from lightning_modules.strategies import GANDDPStrategy  # noqa: F401 - registers ddp_gan / ddp_gan_spawn


def _device_count(devices: Any, accelerator: str) -> int:
    """How many devices Lightning will use: a list, a positive count, or ``auto``/``-1`` -> every
    visible GPU when the run is on GPUs, else 1 (Lightning's CPU accelerator runs one process for
    ``devices=auto``; more CPU processes need an explicit ``devices=N``)."""
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        return len(devices)
    if isinstance(devices, str) and devices.strip().isdigit():
        devices = int(devices)
    if isinstance(devices, int) and devices > 0:
        return devices
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return torch.cuda.device_count() if on_gpu and torch.cuda.is_available() else 1


def resolve_strategy(trainer_cfg: DictConfig) -> str | Any:
    """``strategy: auto`` with several devices: ``ddp_gan`` (see ``strategies.py``), no DDP wrapper and so
    no unused-parameter search for the alternating G/D updates."""
    strategy = trainer_cfg.get("strategy", "auto")
    if strategy != "auto":
        return strategy
    n = _device_count(trainer_cfg.get("devices", 1), str(trainer_cfg.get("accelerator", "auto")))
    if n * int(trainer_cfg.get("num_nodes", 1)) <= 1:
        return "auto"
    if under_submitit("slurm"):  # srun started one process per rank already
        return "ddp_gan"
    sweeping = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    # A -m sweep re-runs itself in every DDP child; spawned workers do not.
    return "ddp_gan_spawn" if sweeping else "ddp_gan"


def under_submitit(executor: str | None = None) -> bool:
    """True inside a job started by submitit (``hydra/launcher=slurm|submitit_slurm|submitit_local``),
    of the given executor (slurm, local) when one is named."""
    name = os.environ.get("SUBMITIT_EXECUTOR", "")
    return bool(name) and (executor is None or name == executor)


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 convolutions run natively. Elsewhere (AVX2-only CPUs) oneDNN emulates
    them and a bf16 step is ~10x slower than float32 (measured: docs/speed.md)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(trainer_cfg: DictConfig) -> str:
    """``precision: auto``: bf16-mixed on a GPU with bf16 (else 16-mixed) and on a CPU with native
    bf16; 32-true on other CPUs. Any other value is passed through."""
    precision = str(trainer_cfg.get("precision", "32-true"))
    if precision != "auto":
        return precision
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


def _instantiate_group(group: DictConfig | None) -> list:
    if not group:
        return []
    return [instantiate(node) for node in group.values() if isinstance(node, DictConfig) and "_target_" in node]


def start_loggers(loggers: list, output_dir: str) -> list:
    """Start W&B now (rank 0), not at the first log call: when it cannot start (no login, no
    network, a bad entity) training goes on with a warning and local CSV logs instead."""
    from lightning.pytorch.loggers import CSVLogger, WandbLogger
    from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

    if rank_zero_only.rank != 0:
        return loggers
    kept = []
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            try:
                logger.experiment  # noqa: B018 - wandb.init
            except Exception as err:  # noqa: BLE001 - any failure to start is reported, not fatal
                first = str(err).strip().splitlines()[0] if str(err).strip() else ""
                rank_zero_warn(f"gan-ga: W&B could not start ({type(err).__name__}: {first}); training continues "
                               f"with local CSV logs in {output_dir}/csv. Log in (`wandb login`) or set "
                               "logger.wandb.offline=true to keep a W&B run that `wandb sync` uploads later.")
                if not any(isinstance(other, CSVLogger) for other in loggers):
                    kept.append(CSVLogger(save_dir=output_dir, name="csv", version=""))
                continue
        kept.append(logger)
    return kept


def build_trainer(cfg: DictConfig, **overrides: Any) -> L.Trainer:
    from lightning.pytorch.loggers import WandbLogger

    from lightning_modules.callbacks import WandbRunId

    callbacks = _instantiate_group(cfg.get("callbacks"))
    loggers = start_loggers(_instantiate_group(cfg.get("logger")), str(cfg.paths.output_dir))
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        callbacks.append(WandbRunId())
    return instantiate(cfg.trainer, strategy=resolve_strategy(cfg.trainer), precision=resolve_precision(cfg.trainer),
                       callbacks=callbacks,
                       logger=loggers or False, plugins=[AtomicCheckpointIO()], **overrides)


def _finish_wandb(trainer: L.Trainer) -> None:
    """Close the W&B run now (it writes its summary), not at interpreter exit: sweeps and tests
    run several trainings in one process."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and trainer.is_global_zero:
            logger.experiment.finish()


def build_data_and_module(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule]:
    """The data module (set up: its files are read first, so bad paths and files fail before any
    model loads) and the LightningModule of a run config. The text encoder is built once and handed
    to both: the data module caches its features (``use_text_encoder``), the module trains with it.
    Data and model never reach into each other through the trainer."""
    datamodule = build(cfg.data)
    datamodule.setup("fit")
    encoder = build(cfg.encoder)
    if hasattr(datamodule, "use_text_encoder"):  # gan-ga's caption data; a user's data module may not cache
        datamodule.use_text_encoder(encoder)
    return datamodule, build_module(cfg, encoder=encoder)


def continue_wandb_run(cfg: DictConfig, ckpt_path: str | None) -> None:
    """A resumed run logs into the W&B run its checkpoint was logged under (the id the checkpoint
    holds, ``callbacks.WandbRunId``), unless ``logger.wandb.id`` is set."""
    if not ckpt_path or OmegaConf.select(cfg, "logger.wandb._target_") is None or cfg.logger.wandb.get("id"):
        return
    from lightning_modules.callbacks import WANDB_RUN_ID

    run_id = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True).get(WANDB_RUN_ID)
    if run_id:
        with open_dict(cfg):
            cfg.logger.wandb.id = str(run_id)
        rank_zero_info(f"gan-ga: continuing W&B run {run_id}")


def run_training(cfg: DictConfig) -> dict[str, float]:
    """Validate, build, fit; return the final logged metrics (floats).

    A SIGTERM / SIGUSR1 ends the fit early with ``last.ckpt`` saved (see ``callbacks.Preemption``);
    the function then returns normally. A diverged run raises :class:`DivergenceError`.
    """
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    validate(cfg)
    resume = cfg.get("resume")
    if resume is None and cfg.get("ckpt_path") is None and under_submitit("slurm"):
        resume = "auto"  # a requeued job continues from its own folder's last.ckpt
    ckpt_path = resolve_resume(resume, cfg.get("ckpt_path"), cfg.paths.output_dir, warn=rank_zero_info)
    continue_wandb_run(cfg, ckpt_path)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, module = build_data_and_module(cfg)
    trainer = build_trainer(cfg)
    for logger in trainer.loggers:
        logger.log_hyperparams(module.run_config)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SIGTERMException:
        rank_zero_info("gan-ga: stopped by SIGTERM; the checkpoint above holds the state. "
                       "Continue with: python train.py resume=auto hydra.run.dir=RUN")
    finally:
        _finish_wandb(trainer)
    if not cfg.trainer.get("fast_dev_run"):
        rank_zero_info(f"run folder: {cfg.paths.output_dir}")
    return {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}


def optimized_metric(cfg: DictConfig) -> str:
    """``optimized_metric``, with ``auto`` resolved: whole-caption accuracy on shapes, FID when the
    training metrics compute it, else D's matching margin on val."""
    name = str(cfg.get("optimized_metric") or "auto")
    if name != "auto":
        return name
    target = str(OmegaConf.select(cfg, "data._target_", default=""))
    if target.endswith("PairsShapesDataModule"):  # relation scenes: the pairs metrics
        return "metrics/pairs/scene"
    if target.endswith("ShapesDataModule"):
        return "metrics/caption_accuracy"
    if OmegaConf.select(cfg, "callbacks.sample_metrics.inception_weights", default=None):
        return "metrics/fid"
    return "val/match_margin"


def optimized_value(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    """The value train.py returns. In a -m sweep a missing metric is an error naming what was
    logged (a sweeper cannot rank a trial without it); in a single run it is None."""
    name = optimized_metric(cfg)
    if name in metrics:
        return metrics[name]
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise ConfigError(f"optimized_metric={name!r} was not logged by this run; logged: {sorted(metrics)}. "
                          "Set optimized_metric=KEY (e.g. val/match_margin) or enable the metric "
                          "(callbacks.sample_metrics)")
    return None
