"""Checkpoints that survive kills: atomic writes, validity checks, and finding where to resume.

* :class:`AtomicCheckpointIO` writes every checkpoint to ``NAME.tmp`` in the same folder, flushes it
  to disk and renames it over ``NAME``: a kill during a save leaves the previous file whole.
  Each checkpoint carries the SHA-256 of its whole content (:func:`content_digest`, under
  ``gan_ga_digest``); a checkpoint with a non-finite tensor is never written.
* :func:`check_checkpoint` opens a file (``weights_only=True``: tensors and plain data only) and
  says what is wrong with it, if anything: unreadable, not gan-ga's, content that does not match its
  digest (a flipped byte), a non-finite weight.
* :func:`resolve_resume` turns ``resume=auto|DIR|FILE`` into the newest *valid* checkpoint, skipping
  damaged ones with a warning that names them.
"""

from __future__ import annotations

import errno
import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from datamodules.resumable import ResumableDataModule
from gan_ga_utils.errors import CheckpointError
from gan_ga_utils.files import atomic_write

DIGEST_KEY = "gan_ga_digest"


def _walk(obj: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, leaf) of a checkpoint's nested dicts / lists, dict keys in a fixed order."""
    if isinstance(obj, dict):
        for key in sorted(obj, key=repr):
            yield from _walk(obj[key], f"{path}.{key}" if path else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            yield from _walk(item, f"{path}[{i}]")
    else:
        yield path, obj


def content_digest(checkpoint: dict) -> str:
    """SHA-256 of everything a checkpoint holds (tensors by dtype, shape and bytes; plain data by
    value), except the digest itself: a flipped byte anywhere in the file's content changes it."""
    digest = hashlib.sha256()
    for path, leaf in _walk({k: v for k, v in checkpoint.items() if k != DIGEST_KEY}):
        digest.update(path.encode())
        if torch.is_tensor(leaf):
            tensor = leaf.detach().cpu()
            digest.update(f"|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(tensor.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
        else:
            digest.update(f"|{type(leaf).__name__}|{leaf!r}|".encode())
    return digest.hexdigest()


def nonfinite(tensors: Iterable[tuple[str, Any]]) -> list[str]:
    """Names of the floating-point tensors among ``tensors`` that hold a NaN or an infinity."""
    return [name for name, t in tensors
            if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all())]


def checkpoint_nonfinite(checkpoint: dict) -> list[str]:
    """The non-finite tensors of a checkpoint's weights and optimizer states."""
    return nonfinite(_walk({k: checkpoint[k] for k in ("state_dict", "optimizer_states") if k in checkpoint}))


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file, fsync, then ``os.replace``: never a half-written checkpoint.
    The content digest is added; a checkpoint with a non-finite tensor is refused (the callbacks skip
    such saves before they get here; this is the last guard)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        bad = checkpoint_nonfinite(checkpoint)
        if bad:
            raise CheckpointError(f"{path}: not written: {len(bad)} tensors are not finite (first: {bad[0]}); "
                                  "the previous checkpoints are kept")
        checkpoint[DIGEST_KEY] = content_digest(checkpoint)
        try:
            with atomic_write(path) as tmp:
                torch.save(checkpoint, tmp)
        except (OSError, RuntimeError) as err:
            raise write_error(Path(path), err) from err


def write_error(path: Path, err: BaseException) -> CheckpointError:
    """A failed checkpoint write, with its likely cause named (torch reports a full disk as
    ``unexpected pos``)."""
    folder = path.parent if path.parent.is_dir() else Path(".")
    free = shutil.disk_usage(folder).free
    first = (str(err).strip().splitlines() or [""])[0][:200]
    code = getattr(err, "errno", None) or getattr(err.__cause__, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        cause = "the disk is full (or the quota is used up)"
    elif code == errno.EFBIG:
        cause = "the file is larger than this process may write (ulimit -f)"
    else:
        cause = (f"{free / 2**20:.0f} MiB are free on that disk (a full disk, a quota or a file size limit is the "
                 "usual cause)")
    return CheckpointError(f"{path}: the checkpoint could not be written ({type(err).__name__}: {first}): {cause}. "
                           f"Nothing was replaced: the previous checkpoints are whole. Free space in {folder} or "
                           "point hydra.run.dir at another disk, then resume with resume=auto")


def remove_stray_tmp(folder: str | Path, warn=print) -> list[Path]:
    """Delete the temporary files a killed save left in a checkpoint folder (``.NAME.*.tmp``)."""
    folder = Path(folder)
    stray = sorted(folder.glob(".*.ckpt.*.tmp")) if folder.is_dir() else []
    for path in stray:
        path.unlink(missing_ok=True)
    if stray:
        warn(f"gan-ga: removed {len(stray)} temporary file(s) of interrupted checkpoint saves in {folder}")
    return stray


@dataclass
class CheckpointInfo:
    path: Path
    batches: int
    global_step: int


def read_checkpoint(path: str | Path, *, verify: bool = True) -> dict:
    """A gan-ga training checkpoint, loaded (``weights_only=True``: tensors and plain data, nothing
    unpickled that could run code) and, with ``verify``, checked against its digest and for
    non-finite tensors; raises :class:`CheckpointError` naming the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=not verify)
    except Exception as err:  # noqa: BLE001 - truncated zip, foreign pickle, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        if "Weights only load failed" in first:  # never follow torch's advice to load it with weights_only=False
            first = "it holds objects other than tensors and plain data, which gan-ga never unpickles"
        raise CheckpointError(f"{path}: damaged or not a checkpoint ({type(err).__name__}: {first[:200]})") from err
    if not isinstance(ckpt, dict) or "gan_ga" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a gan-ga training checkpoint (no 'gan_ga' / 'state_dict' entries)")
    if verify:
        stored = ckpt.get(DIGEST_KEY)
        if stored is not None and stored != content_digest(ckpt):
            raise CheckpointError(f"{path}: damaged: its content does not match the digest written with it "
                                  "(a changed byte: a bad copy, disk or tampering)")
        bad = checkpoint_nonfinite(ckpt)
        if bad:
            raise CheckpointError(f"{path}: holds {len(bad)} non-finite tensors (first: {bad[0]}): the weights "
                                  "of a diverged run")
    return ckpt


def check_checkpoint(path: str | Path, *, verify: bool = True) -> CheckpointInfo:
    """Check ``path`` is a readable, intact gan-ga training checkpoint; raise :class:`CheckpointError`.

    ``verify=False`` reads only the archive's index and non-tensor entries (tensors memory-mapped,
    not read): cheap, and a truncated file fails here exactly as in a full load; ``verify=True``
    also reads every tensor against the checkpoint's digest and checks they are finite."""
    ckpt = read_checkpoint(path, verify=verify)
    return CheckpointInfo(Path(path), int(ckpt["gan_ga"].get("batches_seen", 0)), int(ckpt.get("global_step", 0)))


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
    """The newest checkpoint of ``folder`` that is intact (and, with ``max_batches``, was written
    after at most that many batches); damaged or diverged ones are reported and skipped. The one with
    the most batches wins (modification times can tie or lie after copies); only the files needed to
    find it are read in full."""
    indexed: list[CheckpointInfo] = []
    for path in candidates(folder):
        try:
            info = check_checkpoint(path, verify=False)
        except CheckpointError as err:
            warn(f"gan-ga: skipping checkpoint {err}")
            continue
        if max_batches is None or info.batches <= max_batches:
            indexed.append(info)
    refused: set[Path] = set()
    for info in sorted(indexed, key=lambda i: (i.batches, i.global_step), reverse=True):
        target = info.path.resolve()  # last.ckpt may be a link to a periodic checkpoint
        if target in refused:
            continue
        try:
            check_checkpoint(info.path)
            return info
        except CheckpointError as err:
            refused.add(target)
            warn(f"gan-ga: skipping checkpoint {err}")
    return None


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


def upgrade_data_position(checkpoint: dict, datamodule) -> None:
    """A checkpoint written before the data module kept its training position (its ``state_dict``,
    :class:`~datamodules.resumable.ResumableDataModule`) gets one from the module's ``batches_seen``,
    in place, so that a resumed run still reads the batch it would have read next. Lightning
    restores the data module's state after the module's ``on_load_checkpoint``, which calls this."""
    seen = (checkpoint.get("gan_ga") or {}).get("batches_seen")
    key = type(datamodule).__qualname__
    if isinstance(datamodule, ResumableDataModule) and key not in checkpoint and seen is not None:
        checkpoint[key] = {"batches_trained": int(seen)}
