"""Callbacks of gan-ga's own."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

from lightning_modules.files import write_text


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
    """ModelCheckpoint whose ``last.ckpt`` is always the state at the end of training.

    Lightning's own skips the final save once any periodic checkpoint was written, so ``last.ckpt``
    could be up to ``every_n_train_steps`` old when a run ends between two periodic saves.
    """

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save_now(trainer)

    def save_now(self, trainer: L.Trainer) -> str | None:
        """Write ``last.ckpt`` for the current state unless it is already on disk (every rank calls)."""
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            self._last_global_step_saved = trainer.global_step
        return self.last_model_path or None


class Preemption(L.Callback):
    """SIGTERM (schedulers, SLURM's preemption) or SIGUSR1 (SLURM's ``--signal=USR1@90``): at the
    end of the current batch, ``last.ckpt`` is written (atomically) and training stops cleanly.
    ``python train.py resume=auto hydra.run.dir=RUN`` continues from it.

    Lightning notes SIGTERM itself (``trainer.received_sigterm``) and stops after the batch; this
    callback saves first. SIGUSR1 is taken unless Lightning's SLURM auto-requeue already handles it.
    """

    SIGNALS = ("SIGTERM", "SIGUSR1")

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

        if "SIGUSR1" in self.signals and hasattr(signal, "SIGUSR1") and threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):  # not Lightning's SLURM requeue handler
                self._previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, self._handler)

    def _requested(self, trainer: L.Trainer) -> bool:
        local = self.received is not None or ("SIGTERM" in self.signals and trainer.received_sigterm)
        if trainer.world_size > 1:  # a signal may reach one rank first: stop together
            return bool(trainer.strategy.reduce_boolean_decision(local, all=False))
        return local

    def _save_and_stop(self, trainer: L.Trainer, pl_module: L.LightningModule, name: str) -> None:
        callback = trainer.checkpoint_callback
        path = callback.save_now(trainer) if isinstance(callback, Checkpoint) else None
        if path is None and callback is not None and callback.dirpath:
            path = str(Path(callback.dirpath) / "last.ckpt")
            trainer.save_checkpoint(path)
        batches = int(getattr(pl_module, "batches_seen", -1))
        rank_zero_info(f"gan-ga: {name} received: saved {path or 'no checkpoint (no checkpoint callback)'} at batch "
                       f"{batches}; stopping. Continue with: python train.py resume=auto hydra.run.dir=RUN")
        trainer.should_stop = True
        self.stopped = {"signal": name, "checkpoint": path, "batches": batches}

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
            signal.signal(signum, handler)
        self._previous = {}


class SampleMetrics(L.Callback):
    """Quality metrics of the EMA generator at every ``every_n_validations``-th validation, logged as
    ``metrics/...``, with the best checkpoint kept as ``best.ckpt`` (and ``best.json``).

    ``metrics: auto`` picks caption accuracy (and the oracle Frechet distance) on ``shapes``, FID
    elsewhere when ``inception_weights`` is given, nothing otherwise. The same fixed captions and
    noise are used every time, so values compare across the run; every rank computes the same
    numbers (no gathering needed, and a best-checkpoint decision that all ranks share).
    """

    PRIMARY = {"caption_accuracy": ("metrics/caption_accuracy", "max"), "fid": ("metrics/fid", "min")}
    SPLIT = "val"  # best.ckpt is chosen on val; evaluate.py reports on test

    def __init__(self, *, metrics: str | list = "auto", num_samples: int = 256, every_n_validations: int = 1,
                 batch_size: int = 64, cache_dir: str = "data/cache", inception_weights: str | None = None,
                 dirpath: str | None = None, save_best: bool = True, seed: int = 0):
        self.requested = metrics
        self.num_samples, self.every, self.batch_size = num_samples, every_n_validations, batch_size
        self.cache_dir, self.inception_weights = cache_dir, inception_weights
        self.dirpath, self.save_best, self.seed = dirpath, save_best, seed
        self.metrics: list[str] = []
        self.captions: dict[str, list[str]] = {}  # per metric: the captions its images are generated for
        self.scenes: list | None = None  # shapes: the scene of each caption_accuracy caption
        self.validations = 0
        self.best: float | None = None

    def _resolve(self, datamodule) -> list[str]:
        from datamodules.shapes import ShapesDataModule

        if self.requested != "auto":
            return list(self.requested)
        if isinstance(datamodule, ShapesDataModule):
            return ["caption_accuracy"]
        return ["fid"] if self.inception_weights else []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self.metrics:
            return
        self.metrics = self._resolve(trainer.datamodule)
        if not self.metrics:
            rank_zero_info("metrics during training: none (set callbacks.sample_metrics.inception_weights for FID)")
            return
        from datamodules.shapes import ShapesDataModule
        from lightning_modules.evaluation import eval_set

        if "caption_accuracy" in self.metrics:
            if not isinstance(trainer.datamodule, ShapesDataModule):
                raise ValueError("callbacks.sample_metrics.metrics=[caption_accuracy] needs data=shapes")
            from datamodules.shapes_oracle import load_or_train

            if trainer.local_rank == 0:
                self.oracle = load_or_train(self.cache_dir, log=rank_zero_info)
            trainer.strategy.barrier()
            if trainer.local_rank != 0:
                self.oracle = load_or_train(self.cache_dir, log=rank_zero_info)
            data = eval_set(trainer.datamodule, self.SPLIT, self.num_samples)
            self.captions["caption_accuracy"], self.scenes = data.captions, data.scenes
            self.real_features = self.oracle.features(data.images(range(len(data))))
        if "fid" in self.metrics:
            from lightning_modules.metrics import inception_features, load_inception

            self.inception = load_inception(self.inception_weights)
            data = eval_set(trainer.datamodule, self.SPLIT, self.num_samples)
            self.captions["fid"] = data.captions
            self.inception = self.inception.to(pl_module.device)
            self.real_pool = torch.cat([inception_features(self.inception, data.images(range(i, min(i + 64, len(data)))))[0]
                                        for i in range(0, len(data), 64)])
        self.primary, self.mode = self.PRIMARY[self.metrics[0]]

    @torch.no_grad()
    def compute(self, pl_module) -> dict[str, float]:
        """Each metric scores the images generated for its own captions (one generation per
        distinct caption list)."""
        from lightning_modules.evaluation import generate_for

        generated: dict[tuple, torch.Tensor] = {}

        def fakes(metric: str) -> torch.Tensor:
            key = tuple(self.captions[metric])
            if key not in generated:
                generated[key] = generate_for(pl_module, list(key), self.batch_size, self.seed)
            return generated[key]

        values: dict[str, float] = {}
        if "caption_accuracy" in self.metrics:
            from datamodules.shapes_oracle import caption_scores, frechet_distance

            fake = fakes("caption_accuracy")
            scores = caption_scores(self.oracle, fake, self.scenes)
            values["metrics/caption_accuracy"] = scores.pop("caption")
            values.update({f"metrics/accuracy_{k}": v for k, v in scores.items()})
            values["metrics/oracle_fd"] = frechet_distance(self.real_features, self.oracle.features(fake))
        if "fid" in self.metrics:
            from lightning_modules.metrics import fid, inception_features

            values["metrics/fid"] = fid(self.real_pool, inception_features(self.inception, fakes("fid"))[0])
        values["metrics/samples"] = float(len(self.captions[self.metrics[0]]))
        return values

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.metrics:
            return
        self.validations += 1
        if self.validations % self.every:
            return
        values = self.compute(pl_module)
        pl_module.log_dict(values, on_epoch=True, sync_dist=False)
        value = values[self.primary]
        better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if better and self.save_best and self.dirpath and not trainer.fast_dev_run:
            self.best = value
            self._save_best(trainer, pl_module, value)

    def _save_best(self, trainer: L.Trainer, pl_module, value: float) -> None:
        folder = Path(self.dirpath)
        tmp = folder / ".best.ckpt.tmp"
        trainer.save_checkpoint(tmp)  # every rank calls it; rank 0 writes
        if trainer.is_global_zero:
            tmp.replace(folder / "best.ckpt")
            info = {"metric": self.primary, "mode": self.mode, "value": value, "batches": int(pl_module.batches_seen),
                    "global_step": trainer.global_step}
            write_text(folder / "best.json", json.dumps(info, indent=2))

    def state_dict(self) -> dict:
        return {"best": self.best, "validations": self.validations}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best, self.validations = state_dict.get("best"), state_dict.get("validations", 0)
