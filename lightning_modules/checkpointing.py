"""Checkpoints that survive kills: atomic writes, validity checks, and finding where to resume.

* :class:`AtomicCheckpointIO` writes every checkpoint to ``NAME.tmp`` in the same folder, flushes it
  to disk and renames it over ``NAME``: a kill during a save leaves the previous file whole.
* :func:`check_checkpoint` opens a file (``weights_only=True``: tensors and plain data only;
  memory-mapped, so the tensors are not read) and says what is wrong with it, if anything.
* :func:`resolve_resume` turns ``resume=auto|DIR|FILE`` into the newest *valid* checkpoint, skipping
  damaged ones with a warning that names them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lightning_modules.errors import CheckpointError
from lightning_modules.files import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file, fsync, then ``os.replace``: never a half-written checkpoint."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        with atomic_write(path) as tmp:
            torch.save(checkpoint, tmp)


@dataclass
class CheckpointInfo:
    path: Path
    batches: int
    global_step: int


def check_checkpoint(path: str | Path) -> CheckpointInfo:
    """Check ``path`` is a readable gan-ga training checkpoint; raise :class:`CheckpointError`.

    The archive's index and every non-tensor entry are read; tensors are memory-mapped, not read, so
    checking a folder of large checkpoints is cheap. A truncated file (a killed copy or save) fails
    here exactly as it would in a full load."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - truncated zip, foreign pickle, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CheckpointError(f"{path}: damaged or not a checkpoint ({type(err).__name__}: {first[:200]})") from err
    if not isinstance(ckpt, dict) or "gan_ga" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a gan-ga training checkpoint (no 'gan_ga' / 'state_dict' entries)")
    return CheckpointInfo(path, int(ckpt["gan_ga"].get("batches_seen", 0)), int(ckpt.get("global_step", 0)))


def candidates(folder: Path) -> list[Path]:
    """Checkpoint files of a run folder: its ``checkpoints/*.ckpt`` and the ``hpc_ckpt_*.ckpt`` that
    Lightning's SLURM auto-requeue writes to the run folder itself (or ``folder/*.ckpt`` when it is a
    checkpoint folder), newest first; ``best.ckpt`` is left out (it is not the newest state)."""
    if (folder / "checkpoints").is_dir():
        files = [*(folder / "checkpoints").glob("*.ckpt"), *folder.glob("hpc_ckpt_*.ckpt")]
    else:
        files = list(folder.glob("*.ckpt"))
    files = [p for p in files if p.is_file() and p.name != "best.ckpt"]
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name == "last.ckpt"), reverse=True)


def newest_valid(folder: Path, warn=print, max_batches: int | None = None) -> CheckpointInfo | None:
    """The newest checkpoint of ``folder`` that loads (and, with ``max_batches``, was written after
    at most that many batches); damaged ones are reported and skipped. Among valid ones the one with
    the most batches wins (modification times can tie or lie after copies)."""
    valid: list[CheckpointInfo] = []
    for path in candidates(folder):
        try:
            info = check_checkpoint(path)
        except CheckpointError as err:
            warn(f"gan-ga: skipping checkpoint {err}")
            continue
        if max_batches is None or info.batches <= max_batches:
            valid.append(info)
    if not valid:
        return None
    return max(valid, key=lambda info: (info.batches, info.global_step))


def resolve_resume(resume: str | None, ckpt_path: str | None, output_dir: str | Path, warn=print) -> str | None:
    """The checkpoint to resume from.

    ``ckpt_path=FILE`` must be valid (a damaged file is an error naming the newest valid one beside
    it). ``resume=auto``: the newest valid checkpoint of this run folder (``paths.output_dir``), or
    a fresh start when there is none. ``resume=DIR``: the newest valid checkpoint of that run folder.
    ``resume=FILE`` is ``ckpt_path=FILE``.
    """
    if ckpt_path and resume:
        raise CheckpointError(f"ckpt_path={ckpt_path!r} and resume={resume!r}: give one of them")
    target = ckpt_path or resume
    if not target:
        return None
    if target == "auto":
        info = newest_valid(Path(output_dir), warn)
        if info is None:
            warn(f"gan-ga: resume=auto: no checkpoint in {output_dir}; starting from scratch")
            return None
        warn(f"gan-ga: resuming from {info.path} (batch {info.batches})")
        return str(info.path)
    path = Path(target)
    if path.is_dir():
        info = newest_valid(path, warn)
        if info is None:
            raise CheckpointError(f"resume={target!r}: no valid checkpoint in that folder (looked for *.ckpt in it "
                                  "and in its checkpoints/)")
        warn(f"gan-ga: resuming from {info.path} (batch {info.batches})")
        return str(info.path)
    try:
        return str(check_checkpoint(path).path)
    except CheckpointError as err:
        other = newest_valid(path.parent, warn=lambda *_: None) if path.parent.is_dir() else None
        hint = f"; the newest valid checkpoint beside it is {other.path}" if other else ""
        key = "ckpt_path" if ckpt_path else "resume"
        raise CheckpointError(f"{key}: {err}{hint}") from err


def divergence_message(module) -> str:
    """What a diverged run says: how many bad batches, the newest checkpoint trained before the
    streak began, the likely causes and how to resume with other settings."""
    last = None
    trainer = module._trainer
    callback = trainer.checkpoint_callback if trainer is not None else None
    if callback is not None and getattr(callback, "dirpath", None):
        streak = int(module.bad_streak)
        first_bad = int(module.batches_seen) - streak + 1  # batches trained before the streak began
        folder = Path(callback.dirpath)
        info = newest_valid(folder, warn=lambda *_: None, max_batches=first_bad) if folder.is_dir() else None
        last = f"{info.path} (batch {info.batches})" if info else None
    return (f"training diverged: {int(module.bad_streak)} batches in a row (model.max_bad_batches="
            f"{module.max_bad_batches}) had a non-finite loss or gradient, at batch {int(module.batches_seen)}; "
            f"skipped so far: {int(module.skipped_d)} D and {int(module.skipped_g)} G updates. "
            f"Last good checkpoint: {last or 'none written yet'}. Likely causes: a learning rate too high "
            "(model.optimizer_g.lr / model.optimizer_d.lr), a gradient penalty too strong or too weak "
            "(model.gp_weight), fp16 overflow (use trainer.precision=bf16-mixed or 32-true), or "
            "non-finite input data. Resume from the checkpoint with changed settings: "
            "python train.py ckpt_path=CHECKPOINT ...")


def rng_states() -> dict:
    """The global RNG states (torch CPU and CUDA, numpy, Python) as tensors and plain data, so a
    checkpoint stays loadable with ``weights_only=True``. gan-ga's own noise, augmentation and data
    order are derived from (seed, batch) and do not need them; third-party code may."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)},
            "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss}}


def restore_rng_states(state: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
