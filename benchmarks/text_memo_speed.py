"""Text encoding of a training run's captions with the feature memo against without it (JSON).

The default run (``python train.py``) encodes every batch's captions and their negative captions
with the frozen MiniLM. ``TextToImageGAN.encode_training`` looks each one up in a
:class:`FeatureMemo` (``lightning_modules/components/text_encoders.py``) and runs the encoder on
the captions not met before. This benchmark reads the first ``--batches`` training batches'
captions and negatives from the default data module, in training order, and times, batch by batch
and alternating, the encoder on the whole batch (reference), the memo called once for the captions
and once for the negatives (``two_calls``) and the memo's ``many`` (change: one encoder call over
the batch's new captions and negatives, what training does), under the precision ``precision=auto``
trains in on this CPU. It also records the memo's hit rate.

Usage: ``python benchmarks/text_memo_speed.py [--batches 3500] [--out FILE] [hydra overrides ...]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
import report as report_json  # noqa: E402 - benchmarks/report.py


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--batches", type=int, default=3500, help="training batches (the default run's 3500)")
    args, overrides = parser.parse_known_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from lightning_modules.components.text_encoders import FeatureMemo
    from lightning_modules.training import cpu_has_native_bf16

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, "data.num_workers=0"])
    encoder = instantiate(cfg.encoder)
    datamodule = instantiate(cfg.data)
    dtype = torch.bfloat16 if cpu_has_native_bf16() else None
    memo, memo_two = FeatureMemo(), FeatureMemo()
    times: dict[str, list[float]] = {"reference": [], "two_calls": [], "change": []}
    forms = {"reference": lambda lists: [encoder(c) for c in lists],
             "two_calls": lambda lists: [memo_two(encoder, c) for c in lists],
             "change": lambda lists: memo.many(encoder, *lists)}
    for i, batch in enumerate(datamodule.train_dataloader()):
        if i >= args.batches:
            break
        lists = [c for c in (batch["caption"], batch.get("negative_caption")) if c]
        for name, form in forms.items():
            start = time.perf_counter()
            with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                form(lists)
            times[name].append(time.perf_counter() - start)
    ref, new = statistics.fmean(times["reference"]), statistics.fmean(times["change"])
    two = statistics.fmean(times["two_calls"])
    report = {
        "benchmark": "text_memo_speed",
        "what": "seconds per training batch to encode its captions and negative captions: the frozen encoder on "
                "every caption (reference), the feature memo called per list (two_calls) and in one call per batch "
                "(change), mean over the first batches of the default run's training order",
        "command": "python benchmarks/text_memo_speed.py " + " ".join(overrides),
        "machine": report_json.machine(),
        "precision": "bf16-mixed" if dtype is not None else "32-true",
        "batches": len(times["change"]), "batch_size": int(cfg.data.batch_size),
        "reference_s_mean": ref, "two_calls_s_mean": two, "change_s_mean": new, "speedup": ref / new,
        "speedup_over_two_calls": two / new,
        "memo": {"hits": memo.hits, "misses": memo.misses, "hit_rate": memo.hits / max(1, memo.hits + memo.misses),
                 "entries": len(memo.entries), "megabytes": memo.bytes / 2**20},
        "reference_s": times["reference"], "two_calls_s": times["two_calls"], "change_s": times["change"],
    }
    report_json.write(report, args.out)


if __name__ == "__main__":
    main()
