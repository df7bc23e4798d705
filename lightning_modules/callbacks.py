"""Callbacks of gan-ga's own."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info


def weights_digest(module: torch.nn.Module) -> bytes:
    """SHA-256 of every parameter and buffer, in state-dict order: equal iff bitwise equal."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
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
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            self._last_global_step_saved = trainer.global_step
