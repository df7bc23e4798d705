"""Cache of frozen text-encoder outputs: every caption encoded once, served from memory-mapped files.

Layout: ``CACHE_DIR/<key>/{tokens,mask,pooled}.npy`` plus ``meta.json``. The key hashes the
encoder's identity (name, pooling, max length, a digest of its weights), the storage dtype and the
exact caption list, so a different encoder, length or data set never reads another's features.

A cache is built in a temporary folder and renamed into place only when complete; ``meta.json``
records the expected shapes. A folder whose files are missing, short or of the wrong shape (a run
killed while copying, a disk that filled up) is set aside and rebuilt, never read.

Token features are stored at one fixed length: the longest tokenized caption of the set (at most
``max_length``); positions past a caption's end are zeros with ``mask`` False.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info

from gan_ga_utils.errors import TextCacheError

FORMAT_VERSION = 1
DTYPES = {"float16": np.float16, "float32": np.float32}
FILES = ("tokens", "mask", "pooled")


def cache_key(encoder, captions: Sequence[str], dtype: str) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"format": FORMAT_VERSION, "dtype": dtype, **encoder.cache_identity()},
                             sort_keys=True).encode())
    for caption in captions:
        digest.update(caption.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:32]


class CachedText:
    """Read side: opens the memory maps lazily in each process (DataLoader workers included) and
    returns one caption's features as tensors."""

    def __init__(self, folder: Path, meta: dict):
        self.folder, self.meta = folder, meta
        self._arrays: dict[str, np.ndarray] | None = None

    def __getstate__(self) -> dict:  # workers get the path, never a copy of the arrays
        return {"folder": self.folder, "meta": self.meta, "_arrays": None}

    def __len__(self) -> int:
        return int(self.meta["count"])

    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self._arrays = {name: np.load(self.folder / f"{name}.npy", mmap_mode="r") for name in FILES}
        return self._arrays

    def item(self, row: int) -> dict[str, torch.Tensor]:
        a = self.arrays()
        return {"text_tokens": torch.from_numpy(np.array(a["tokens"][row])),
                "text_mask": torch.from_numpy(np.array(a["mask"][row])),
                "text_pooled": torch.from_numpy(np.array(a["pooled"][row]))}

    def rows(self, rows: Sequence[int]) -> dict[str, torch.Tensor]:
        a, idx = self.arrays(), np.asarray(rows)
        return {f"text_{name}": torch.from_numpy(np.array(a[name][idx])) for name in FILES}


def _valid(folder: Path, key: str) -> dict | None:
    """The cache's metadata if every file is complete and of the recorded shape, else None."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("key") != key or meta.get("complete") is not True:
            return None
        for name in FILES:
            array = np.load(folder / f"{name}.npy", mmap_mode="r")
            if list(array.shape) != meta["shapes"][name] or str(array.dtype) != meta["dtypes"][name]:
                return None
        return meta
    except (OSError, ValueError, KeyError, EOFError):
        return None  # missing, truncated, or not what meta.json says


@torch.no_grad()
def encode_all(encoder, captions: Sequence[str], folder: Path, *, dtype: str, batch_size: int) -> dict:
    """Encode ``captions`` (longest first, so batches pad little) into .npy memory maps in ``folder``."""
    np_dtype = DTYPES[dtype]
    tokenized = encoder.tokenizer(list(captions), truncation=True, max_length=encoder.max_length)["input_ids"]
    lengths = np.array([len(ids) for ids in tokenized])
    length, dim, n = int(lengths.max()), encoder.out_dim, len(captions)
    tokens = np.lib.format.open_memmap(folder / "tokens.npy", mode="w+", dtype=np_dtype, shape=(n, length, dim))
    mask = np.lib.format.open_memmap(folder / "mask.npy", mode="w+", dtype=np.bool_, shape=(n, length))
    pooled = np.lib.format.open_memmap(folder / "pooled.npy", mode="w+", dtype=np_dtype, shape=(n, dim))
    was_training = encoder.training
    encoder.eval()
    order = np.argsort(-lengths, kind="stable")
    for start in range(0, n, batch_size):
        rows = order[start : start + batch_size]
        features = encoder([captions[i] for i in rows])
        width = features.tokens.shape[1]
        tokens[rows, :width] = features.tokens.float().cpu().numpy().astype(np_dtype)
        tokens[rows, width:] = 0
        mask[rows, :width] = features.mask.cpu().numpy()
        mask[rows, width:] = False
        pooled[rows] = features.pooled.float().cpu().numpy().astype(np_dtype)
    encoder.train(was_training)
    for array in (tokens, mask, pooled):
        array.flush()
    del tokens, mask, pooled
    return {"count": n, "length": length, "dim": dim,
            "shapes": {"tokens": [n, length, dim], "mask": [n, length], "pooled": [n, dim]},
            "dtypes": {"tokens": dtype, "mask": "bool", "pooled": dtype}}


def _fsync_dir(folder: Path) -> None:
    for path in [*folder.iterdir(), folder]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def build(encoder, captions: Sequence[str], root: Path, key: str, *, dtype: str, batch_size: int) -> Path:
    """Write the cache into a temporary folder, then move it into place whole."""
    final = root / key
    tmp = root / f".{key}.building-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        meta = encode_all(encoder, captions, tmp, dtype=dtype, batch_size=batch_size)
        meta.update(key=key, encoder=encoder.cache_identity(), complete=True)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        _fsync_dir(tmp)
        if final.exists():  # a broken earlier cache: set aside, then remove
            stale = root / f".{key}.stale-{uuid.uuid4().hex[:8]}"
            os.replace(final, stale)
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def load_or_build(encoder, captions: Sequence[str], root: Path | str, *, dtype: str = "float16",
                  batch_size: int = 256) -> CachedText:
    """The cached features of ``captions``: read if a complete cache exists, else built. With several
    processes, process 0 calls this first (``distributed.rank_zero_first``) and the others then read
    what it built."""
    if dtype not in DTYPES:
        raise TextCacheError(f"data.cache_dtype={dtype!r}: allowed float16, float32")
    if not captions:
        raise TextCacheError("text cache: no captions to encode")
    root = Path(root)
    key = cache_key(encoder, captions, dtype)
    folder = root / key
    if _valid(folder, key) is None:
        state = "rebuilding an incomplete cache" if folder.exists() else "encoding"
        rank_zero_info(f"text cache: {state} {len(captions)} captions with {encoder.name} -> {folder}")
        try:
            build(encoder, captions, root, key, dtype=dtype, batch_size=batch_size)
        except OSError as err:
            raise TextCacheError(f"text cache: cannot write {root} ({err}); set data.cache_dir to a writable "
                                 "folder or data.cache_text=false") from err
    meta = _valid(folder, key)
    if meta is None:
        raise TextCacheError(f"text cache {folder} is incomplete after building; delete it and rerun")
    return CachedText(folder, meta)
