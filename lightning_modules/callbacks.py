"""Callbacks of gan-ga's own."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from gan_ga_utils.errors import ConfigError, MetricsError
from gan_ga_utils.files import write_text
from lightning_modules.checkpointing import nonfinite, remove_stray_tmp
from lightning_modules.sampling import labelled_grid, save_png, side_by_side, to_uint8


def weights_digest(module: torch.nn.Module) -> bytes:
    """SHA-256 of every parameter and buffer, in state-dict order: equal iff bitwise equal."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        # reshape(-1): logical order whatever the memory format (channels_last weights included)
        digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.digest()


class DDPConsistencyCheck(L.Callback):
    """After training on several ranks, checks that G, D and the EMA generator are bitwise equal on
    every rank (they must be: DDP averages gradients, so every rank takes the same steps). Writes
    ``ddp_consistency.json`` to the run folder and raises if the ranks disagree."""

    NETWORKS = ("generator", "discriminator", "generator_ema")

    def __init__(self, output_dir: str | None = None):
        self.output_dir = output_dir

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size < 2:
            return
        local = torch.stack([torch.frombuffer(bytearray(weights_digest(getattr(pl_module, n))), dtype=torch.uint8)
                             for n in self.NETWORKS]).to(pl_module.device)
        gathered = trainer.strategy.all_gather(local).cpu()  # [world, networks, 32]
        report = {
            "world_size": trainer.world_size,
            "batches": int(pl_module.batches_seen),
            "digests": {n: [bytes(gathered[r, i].tolist()).hex() for r in range(trainer.world_size)]
                        for i, n in enumerate(self.NETWORKS)},
        }
        report["consistent"] = all(len(set(v)) == 1 for v in report["digests"].values())
        if trainer.is_global_zero and self.output_dir:
            Path(self.output_dir).mkdir(parents=True, exist_ok=True)
            (Path(self.output_dir) / "ddp_consistency.json").write_text(json.dumps(report, indent=2))
        if not report["consistent"]:
            raise RuntimeError(f"weights differ across DDP ranks after training: {report['digests']}")
        rank_zero_info(f"DDP check: G, D and EMA weights identical on all {trainer.world_size} ranks")


class Checkpoint(ModelCheckpoint):
    """ModelCheckpoint that counts its interval in batches, and whose ``last.ckpt`` is always the
    state at the end of training.

    ``every_n_batches``: a periodic checkpoint every N trained batches, and no other (no save at each
    validation unless ``every_n_epochs`` is set). Lightning's
    ``every_n_train_steps`` counts optimizer steps (``n_critic + 1`` per batch, plus lazy penalty
    steps), and one skipped update shifts them for good: ``global_step % N`` would never be 0 again.
    Lightning's own callback also skips the final save once any periodic checkpoint was written, so
    ``last.ckpt`` could be up to an interval old when a run ends between two periodic saves.

    No checkpoint of non-finite weights is written: such a save is skipped with a warning (every rank
    decides together) and the files already written stay as they are, so ``resume=auto`` never finds
    diverged weights. When a periodic checkpoint was just written for this state, ``last.ckpt`` is a
    link to it (replaced atomically), not a second full copy.
    """

    def __init__(self, *, every_n_batches: int | None = None, **kwargs):
        if kwargs.get("every_n_train_steps"):
            raise ConfigError(f"callbacks.model_checkpoint.every_n_train_steps={kwargs['every_n_train_steps']}: "
                              "gan-ga counts checkpoint intervals in batches; use "
                              "callbacks.model_checkpoint.every_n_batches instead")
        if every_n_batches is not None and every_n_batches < 0:
            raise ConfigError(f"callbacks.model_checkpoint.every_n_batches={every_n_batches}: must be >= 0 (0 = off)")
        # the batch interval is the one periodic save: Lightning's every_n_epochs defaults to 1, which in
        # a run of one long epoch also saved a full checkpoint at every validation
        kwargs.setdefault("every_n_epochs", 0)
        super().__init__(**kwargs)
        self.every_n_batches = every_n_batches or 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args, **kwargs) -> None:
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)  # time-based intervals
        batches = int(getattr(pl_module, "batches_seen", 0))
        if not self.every_n_batches or batches % self.every_n_batches or self._should_skip_saving_checkpoint(trainer):
            return
        candidates = self._monitor_candidates(trainer)
        self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save_now(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A run resumed from a checkpoint of this folder continues its ``last.ckpt`` (replaced as
        before), even when that checkpoint's saved state names no last file (``last.ckpt`` was a link
        to a periodic save); a ``last.ckpt`` of another run in the folder is kept (``last-v1.ckpt``)."""
        super().on_train_start(trainer, pl_module)
        resumed, last = trainer.ckpt_path, Path(self.dirpath or "") / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"
        if resumed and self.dirpath and Path(resumed).resolve().parent == Path(self.dirpath).resolve() \
                and (last.is_symlink() or last.exists()):
            self.last_model_path = str(last)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if trainer.is_global_zero and self.dirpath:
            remove_stray_tmp(self.dirpath, warn=rank_zero_info)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        bad = weights_nonfinite(trainer)
        finite = not bad
        if trainer.world_size > 1:
            finite = bool(trainer.strategy.reduce_boolean_decision(finite, all=True))
        if not finite:
            rank_zero_warn(f"gan-ga: not writing {filepath}: {len(bad) or 'some'} weights or optimizer states are not "
                           f"finite{f' (first: {bad[0]})' if bad else ' on another rank'}; the checkpoints already "
                           "written are kept")
            return
        super()._save_checkpoint(trainer, filepath)

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict) -> None:
        if not self.save_last:
            return
        filepath = self.format_checkpoint_name(monitor_candidates, self.CHECKPOINT_NAME_LAST)
        version = self.STARTING_VERSION  # another run's last.ckpt in this folder is kept (last-v1.ckpt ...)
        while self._enable_version_counter and self.file_exists(filepath, trainer) and filepath != self.last_model_path:
            filepath = self.format_checkpoint_name(monitor_candidates, self.CHECKPOINT_NAME_LAST, ver=version)
            version += 1
        previous, self.last_model_path = self.last_model_path, filepath
        just_saved = self._last_checkpoint_saved
        if (just_saved and self._last_global_step_saved == trainer.global_step
                and Path(just_saved).name != Path(filepath).name):
            link_file(trainer, just_saved, filepath)  # same state: a link, not a second copy
        else:
            self._save_checkpoint(trainer, filepath)
        if previous and self._should_remove_checkpoint(trainer, previous, filepath):
            self._remove_checkpoint(trainer, previous)

    def save_now(self, trainer: L.Trainer) -> str | None:
        """Write ``last.ckpt`` for the current state unless it is already on disk (every rank calls);
        its path, or None when nothing holds this state (no ``save_last``, or non-finite weights)."""
        if not self.save_last:
            return None
        if self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            written = self._last_global_step_saved == trainer.global_step
            self._last_global_step_saved = trainer.global_step  # a refused save is not retried
            if not written:
                return None
        return self.last_model_path or None


def link_file(trainer: L.Trainer, target: str, link: str) -> None:
    """``link`` -> ``target`` (relative symlink, or a copy where links are not allowed), replacing
    ``link`` atomically; rank 0 writes, every rank waits."""
    import os
    import shutil
    import uuid

    if trainer.is_global_zero:
        tmp = Path(link).with_name(f".{Path(link).name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            os.symlink(os.path.relpath(target, os.path.dirname(link)), tmp)
        except OSError:
            shutil.copy(target, tmp)
        os.replace(tmp, link)
    trainer.strategy.barrier()


def weights_nonfinite(trainer: L.Trainer) -> list[str]:
    """Names of the module's parameters / buffers and optimizer states that are not finite."""
    module = trainer.lightning_module
    named = list(module.state_dict().items())
    for i, optimizer in enumerate(trainer.optimizers):
        for pid, state in optimizer.state_dict()["state"].items():
            named += [(f"optimizer{i}.state.{pid}.{k}", v) for k, v in state.items()]
    return nonfinite(named)


def _from_submitit(handler) -> bool:
    owner = getattr(handler, "__self__", None)
    return owner is not None and type(owner).__module__.startswith("submitit")


class Preemption(L.Callback):
    """SIGTERM (schedulers, SLURM's preemption), SIGUSR1 (SLURM's ``--signal=USR1@90``) or SIGUSR2
    (submitit's ``--signal=USR2@...``): at the end of the current batch, ``last.ckpt`` is written
    (atomically) and training stops cleanly. ``python train.py resume=auto hydra.run.dir=RUN``
    continues from it.

    A handler only notes the signal. At the end of each batch the ranks decide together (one
    all-reduce: a signal may reach one rank first, or arrive while rank 0 writes a checkpoint), save
    and stop at the same batch, and the process exits 0. SIGTERM is taken from Lightning once its own
    handler is installed (before the sanity check): that handler runs a collective inside the signal
    handler and hangs DDP when the ranks are not at the same point. SIGUSR1/SIGUSR2 are taken unless
    Lightning's SLURM auto-requeue handles them; under submitit (``hydra/launcher=slurm``) its requeue
    handler runs after the save, so the requeued job resumes from this batch.
    """

    SIGNALS = ("SIGTERM", "SIGUSR1", "SIGUSR2")

    def __init__(self, signals: list[str] | tuple[str, ...] = SIGNALS):
        bad = [name for name in signals if name not in self.SIGNALS]
        if bad:
            raise ValueError(f"callbacks.preemption.signals={list(signals)}: allowed {list(self.SIGNALS)}")
        self.signals = list(signals)
        self.received: str | None = None
        self.stopped: dict | None = None
        self._previous: dict = {}

    def _handler(self, signum, frame) -> None:
        import signal

        self.received = signal.Signals(signum).name

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        for name in self.signals:
            if name == "SIGTERM" or not hasattr(signal, name):
                continue
            signum = getattr(signal, name)
            current = signal.getsignal(signum)
            # not Lightning's SLURM requeue handler; submitit's is called after the save
            if current in (signal.SIG_DFL, None) or _from_submitit(current):
                self._previous[signum] = signal.signal(signum, self._handler)

    def _take_sigterm(self) -> None:
        """Put this callback's handler in place of Lightning's SIGTERM handler (installed after
        ``on_fit_start``); the one it replaces is put back at teardown."""
        import signal
        import threading

        if "SIGTERM" not in self.signals or threading.current_thread() is not threading.main_thread():
            return
        current = signal.getsignal(signal.SIGTERM)
        if current != self._handler:
            self._previous.setdefault(signal.SIGTERM, current)
            signal.signal(signal.SIGTERM, self._handler)

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_sigterm()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_sigterm()

    def _requested(self, trainer: L.Trainer) -> bool:
        local = self.received is not None or ("SIGTERM" in self.signals and trainer.received_sigterm)
        if trainer.world_size > 1:  # a signal may reach one rank first: stop together
            return bool(trainer.strategy.reduce_boolean_decision(local, all=False))
        return local

    def _save_and_stop(self, trainer: L.Trainer, pl_module: L.LightningModule, name: str) -> None:
        callback = trainer.checkpoint_callback
        path = callback.save_now(trainer) if isinstance(callback, Checkpoint) else None
        if not isinstance(callback, Checkpoint) and callback is not None and callback.dirpath:
            path = str(Path(callback.dirpath) / "last.ckpt")
            trainer.save_checkpoint(path, weights_only=False)
        batches = int(getattr(pl_module, "batches_seen", -1))
        rank_zero_info(f"gan-ga: {name} received: saved {path or 'no checkpoint (no checkpoint callback)'} at batch "
                       f"{batches}; stopping. Continue with: python train.py resume=auto hydra.run.dir=RUN")
        trainer.should_stop = True
        self.stopped = {"signal": name, "checkpoint": path, "batches": batches}
        import signal

        previous = self._previous.get(getattr(signal, name, None))
        if _from_submitit(previous):  # requeue the job (submitit exits the process)
            previous(getattr(signal, name), None)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        if self._requested(trainer):
            self._save_and_stop(trainer, pl_module, self.received or "SIGTERM")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """SIGTERM during validation stops Lightning before the next batch end: save here instead
        (single process only: other ranks may not reach this point together)."""
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if isinstance(exception, SIGTERMException) and self.stopped is None and trainer.world_size == 1:
            self._save_and_stop(trainer, pl_module, "SIGTERM")

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        import signal

        for signum, handler in self._previous.items():
            if signal.getsignal(signum) == self._handler:  # Lightning may have restored its originals first
                signal.signal(signum, handler)
        self._previous = {}


def improved(value: float, best: float | None, mode: str) -> bool:
    """Whether ``value`` beats ``best`` (``mode``: max | min); any value beats none."""
    return best is None or (value > best if mode == "max" else value < best)


def logged_name(key: str) -> str:
    """A metrics.json name -> the name training logs it under: ``metrics/caption_accuracy`` (whole
    captions), ``metrics/accuracy_{shape,color,size,position}``, per subset
    ``metrics/caption_accuracy/seen``, ``metrics/accuracy/seen/shape`` ..., ``metrics/oracle_fd``,
    ``metrics/diversity/open_tv``, ``metrics/fid`` ..."""
    group, _, part = key.partition("/")
    if group == "caption_accuracy":
        subset, _, value = part.rpartition("/")
        if value == "caption":
            return "metrics/caption_accuracy" + (f"/{subset}" if subset else "")
        return f"metrics/accuracy/{subset}/{value}" if subset else f"metrics/accuracy_{value}"
    return f"metrics/{key}"


class SampleMetrics(L.Callback):
    """Quality metrics of the EMA generator at every ``every_n_validations``-th validation, logged as
    ``metrics/...``, with the best checkpoint kept as ``best.ckpt`` (and ``best.json``).

    The metrics are the registry's (``lightning_modules.metrics``), computed as evaluate.py computes
    them, on the val split's evaluation set (``evaluation.eval_set``: ``num_samples`` images chosen
    with ``seed``). ``metrics: auto`` picks caption accuracy (and the oracle Frechet distance) on
    ``shapes``, the reference network's FD, label accuracy and memorisation check on real data with
    ``data.label_columns``, FID elsewhere when ``inception_weights`` is given, nothing otherwise
    (``metrics.auto``); the first metric
    chooses ``best.ckpt``. The same captions and noise are used every time, so values compare across
    the run. Every rank computes the numbers (no gathering); whether one is the best so far is
    decided on rank 0 and broadcast, so all ranks save ``best.ckpt`` together (the save holds a
    barrier). The shapes oracle is trained on rank 0 first; a failure there stops every rank.
    """

    SPLIT = "val"  # best.ckpt is chosen on val; evaluate.py reports on test

    def __init__(self, *, metrics: str | list = "auto", num_samples: int = 256, every_n_validations: int = 1,
                 batch_size: int = 64, cache_dir: str = "data/cache", inception_weights: str | None = None,
                 clip_model: str | None = None, dirpath: str | None = None, save_best: bool = True, seed: int = 0):
        self.requested = metrics
        self.num_samples, self.every, self.batch_size = num_samples, every_n_validations, batch_size
        self.cache_dir, self.inception_weights, self.clip_model = cache_dir, inception_weights, clip_model
        self.dirpath, self.save_best, self.seed = dirpath, save_best, seed
        self.metrics: list = []  # the registry's Metric objects
        self.captions: list[str] = []  # the evaluation set's captions, generated for at every validation
        self.data = None  # evaluation.EvalSet
        self.real: dict[str, torch.Tensor] | None = None  # the real images' tensors, read once
        self.validations = 0
        self.best: float | None = None

    def _resolve(self, datamodule) -> list[str]:
        from lightning_modules.metrics import auto

        return auto(datamodule, self.inception_weights) if self.requested == "auto" else list(self.requested)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self.metrics:
            return
        names = self._resolve(trainer.datamodule)
        if not names:
            rank_zero_info("metrics during training: none (set callbacks.sample_metrics.inception_weights for FID)")
            return
        from datamodules.shapes import ShapesDataModule
        from lightning_modules.evaluation import eval_set
        from lightning_modules.metrics import Readers, resolve

        metrics = resolve(names)
        if "caption_accuracy" in names and not isinstance(trainer.datamodule, ShapesDataModule):
            raise MetricsError("callbacks.sample_metrics.metrics=[caption_accuracy] needs data=shapes")
        self.readers = Readers(metrics, cache_dir=self.cache_dir, inception_weights=self.inception_weights,
                               clip_model=self.clip_model, dist=trainer.strategy, datamodule=trainer.datamodule,
                               log=rank_zero_info)
        self.data = eval_set(trainer.datamodule, self.SPLIT, self.num_samples, self.seed,
                             diversity=any(m.reads_blocks for m in metrics))
        self.captions = self.data.captions
        self.metrics = metrics
        self.primary, self.mode = logged_name(metrics[0].headline), metrics[0].better

    def _read(self, images_of, keys: set[str], blocks: set[str]) -> dict[str, torch.Tensor]:
        """The readers' tensors of the evaluation set, batch by batch: ``images_of(indices)`` gives the
        images. Keys in ``blocks`` are read of the diversity blocks too, the others of the main part only."""
        from lightning_modules.metrics import read_rows

        n, step = len(self.captions), self.batch_size
        main = self.data.blocks["main"][1] if self.data.blocks else n
        if not keys:
            return {}
        end = n if keys & blocks else main
        parts = [read_rows(self.readers, images_of(range(s, min(s + step, end))), self.captions[s : min(s + step, end)],
                           keys, blocks, max(0, min(step, main - s)))
                 for s in range(0, end, step)]
        return {k: torch.cat([p[k] for p in parts if k in p]) for k in keys}

    @torch.no_grad()
    def compute(self, pl_module) -> dict[str, float]:
        """The metrics of the EMA generator on the evaluation set, under their logged names."""
        from lightning_modules.evaluation import generate_for
        from lightning_modules.metrics import block_keys, compute, wanted

        self.readers.to(pl_module.device)
        if self.real is None:
            self.real = self._read(self.data.images, wanted(self.metrics, "real"), block_keys(self.metrics, "real"))

        def fakes(indices: range) -> torch.Tensor:
            return generate_for(pl_module, self.captions[indices.start : indices.stop], self.batch_size, self.seed,
                                indices=indices)

        values = compute(self.metrics, self._read(fakes, wanted(self.metrics, "fake"), block_keys(self.metrics, "fake")),
                         self.real,
                         self.readers.context(self.seed, self.data))
        reference = {key for m in self.metrics for key in m.reference}
        out = {logged_name(k): v for k, v in values.items() if k not in reference}
        main = self.data.blocks["main"][1] if self.data.blocks else len(self.captions)
        out["metrics/samples"] = float(main)  # the split's captions; the diversity blocks come on top
        if main != len(self.captions):
            out["metrics/diversity_samples"] = float(len(self.captions) - main)
        return out

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.metrics:
            return
        self.validations += 1
        if self.validations % self.every:
            return
        values = self.compute(pl_module)
        pl_module.log_dict(values, on_epoch=True, sync_dist=False)
        value = values[self.primary]
        # rank 0's numbers decide: ranks whose values differ in the last bit must still save together
        better, value = trainer.strategy.broadcast((improved(value, self.best, self.mode), value), src=0)
        if better and self.save_best and self.dirpath and not trainer.fast_dev_run:
            self.best = value
            self._save_best(trainer, pl_module, value)

    def _save_best(self, trainer: L.Trainer, pl_module, value: float) -> None:
        folder = Path(self.dirpath)
        tmp = folder / ".best.ckpt.tmp"
        trainer.save_checkpoint(tmp, weights_only=False)  # every rank calls it; rank 0 writes
        if trainer.is_global_zero:
            tmp.replace(folder / "best.ckpt")
            info = {"metric": self.primary, "mode": self.mode, "value": value, "batches": int(pl_module.batches_seen),
                    "global_step": trainer.global_step}
            write_text(folder / "best.json", json.dumps(info, indent=2))

    def state_dict(self) -> dict:
        return {"best": self.best, "validations": self.validations}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best, self.validations = state_dict.get("best"), state_dict.get("validations", 0)


class SampleGrid(L.Callback):
    """After each validation (rank 0): the EMA generator's images of ``model.sample_prompts`` with
    the run's fixed noise (``samples_per_prompt`` per prompt), as a labelled grid written to
    ``model.sample_dir`` (``batch_NNNNNNN.png`` and ``latest.png``) and sent to the loggers."""

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        prompts = list(getattr(pl_module, "sample_prompts", []))
        if trainer.sanity_checking or not trainer.is_global_zero or not prompts:
            return
        images = to_uint8(pl_module.sample(prompts, pl_module.sample_z))
        rows = images.reshape(len(prompts), pl_module.sample_z.shape[0], *images.shape[1:])
        grid = labelled_grid(rows, prompts, scale=max(1, 64 // rows.shape[2]))
        step = int(pl_module.batches_seen)
        if pl_module.sample_dir:
            save_png(grid, f"{pl_module.sample_dir}/batch_{step:07d}.png")
            save_png(grid, f"{pl_module.sample_dir}/latest.png")
        for logger in trainer.loggers:
            log_images(logger, "samples/grid", grid, prompts, rows, step)


def log_images(logger, key: str, grid, prompts: Sequence[str], rows, step: int) -> None:
    """Send the grid (uint8) and one strip per prompt, captioned, to whichever logger is active."""
    import numpy as np
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    if isinstance(logger, WandbLogger):
        import wandb

        strips = [side_by_side(r) for r in rows]
        logger.log_image(key=key, images=[np.asarray(grid)], step=None, caption=[f"batch {step}"])
        logger.log_image(key="samples/prompts", images=strips, caption=list(prompts))
        logger.log_table(key="samples/table", columns=["batch", "prompt", "EMA samples"],
                         data=[[step, p, wandb.Image(s, caption=p)] for p, s in zip(prompts, strips)])
    elif isinstance(logger, TensorBoardLogger):
        logger.experiment.add_image(key, np.asarray(grid), global_step=step, dataformats="HWC")


class RuntimeSkips(L.Callback):
    """Training samples whose image could not be read when their batch was made: real-data items
    carry ``skipped`` (records passed over to make them, ``datamodules/captions.py``), summed here
    (on the device, no sync per batch) over each training epoch. At its end the count of every rank
    is logged as ``data/skipped_runtime`` and handed to the data module's ``note_runtime_skips``,
    which adds it to ``data_report.json`` and stops the run past ``data.max_skipped_fraction``.
    Batches without ``skipped`` (data=shapes never skips) are left alone."""

    def __init__(self):
        self.skipped: torch.Tensor | None = None
        self.samples = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.skipped, self.samples = None, 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if not isinstance(batch, dict) or "skipped" not in batch:
            return
        count = batch["skipped"].sum()
        self.skipped = count if self.skipped is None else self.skipped + count
        self.samples += batch["skipped"].numel()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.skipped is None:
            return
        totals = torch.stack([self.skipped.long(), torch.tensor(self.samples, device=self.skipped.device)])
        skipped, samples = (int(v) for v in trainer.strategy.reduce(totals, reduce_op="sum"))
        pl_module.log("data/skipped_runtime", float(skipped), on_step=False, on_epoch=True, sync_dist=False)
        note = getattr(trainer.datamodule, "note_runtime_skips", None)
        if note is not None:
            note(trainer.current_epoch, skipped, samples)


WANDB_RUN_ID = "wandb_run_id"  # the checkpoint key


class WandbRunId(L.Callback):
    """Writes the W&B run's id into every checkpoint (``wandb_run_id``), so that a resumed run logs
    into the same W&B run (``training.run_training`` reads it back). Added by ``build_trainer``
    whenever a W&B logger is configured."""

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        from lightning.pytorch.loggers import WandbLogger

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and logger.version:
                checkpoint[WANDB_RUN_ID] = str(logger.version)
