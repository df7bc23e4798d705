"""Training-step time with the frozen-encoder text cache on vs off (JSON on stdout and in --out).

Writes a small captioned image folder (real JPEGs, Flickr-length captions), then trains the real
config (``data=folder``, ``encoder=minilm`` by default) for a few batches twice, with
``data.cache_text=true`` and ``false``, timing every batch with a callback:

* ``step_s``: ``training_step`` alone (on_train_batch_start -> on_train_batch_end);
* ``batch_s``: one full loop iteration (data loading included).

Usage: ``python benchmarks/text_cache_speed.py [--image-size 64] [--batches 12] [--out FILE] [overrides ...]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import report as report_json  # noqa: E402 - benchmarks/report.py

sys.path.insert(0, str(ROOT))

SUBJECTS = ["a black dog", "a little girl", "two men", "a woman in a red coat", "a brown horse", "a group of kids",
            "a surfer", "an old man with a hat", "a white cat", "three young boys"]
ACTIONS = ["is running through", "plays in", "walks along", "jumps over a log in", "sits quietly beside",
           "is looking at something in", "rides a bicycle across"]
PLACES = ["the tall green grass", "a sandy beach near the water", "a busy city street at night",
          "the snow covered mountain", "a small wooden boat on the lake", "the park on a sunny day"]


def write_folder(root: Path, images: int, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(images):
        pixels = rng.integers(0, 256, size=(96, 128, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{i:05d}.jpg", quality=90)
        lines = [f"{rng.choice(SUBJECTS)} {rng.choice(ACTIONS)} {rng.choice(PLACES)}" for _ in range(5)]
        (root / f"{i:05d}.txt").write_text("\n".join(lines) + "\n")


class Timer:
    def __init__(self):
        import lightning as L

        class _Cb(L.Callback):
            def on_train_batch_start(cb, *_):
                now = time.perf_counter()
                if self.start is not None:
                    self.batch.append(now - self.start)
                self.start = now

            def on_train_batch_end(cb, *_):
                self.step.append(time.perf_counter() - self.start)

        self.callback, self.start, self.step, self.batch = _Cb(), None, [], []


def run(data_root: Path, cache_dir: Path, cache_text: bool, args, extra: list[str]) -> dict:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from lightning_modules.training import build_data_and_module, build_trainer

    GlobalHydra.instance().clear()
    overrides = ["data=folder", f"data.root={data_root}", f"data.image_size={args.image_size}",
                 f"data.batch_size={args.batch_size}", f"data.num_workers={args.num_workers}",
                 f"data.cache_text={str(cache_text).lower()}", f"paths.cache_dir={cache_dir}",
                 f"encoder={args.encoder}", f"trainer.max_steps={2 * args.batches}", "trainer.limit_val_batches=0",
                 "trainer.val_check_interval=1000000", "logger=none", "callbacks=none", "trainer.accelerator=auto",
                 "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false", *extra]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(cache_dir.parent / f"run_cache_{cache_text}")
    datamodule, module = build_data_and_module(cfg)
    trainer = build_trainer(cfg)
    timer = Timer()
    trainer.callbacks.append(timer.callback)
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    total = time.perf_counter() - t0
    warm = args.warmup
    step, batch = timer.step[warm:], timer.batch[warm:]
    encode = encoder_time(module, datamodule, args.batch_size) if not cache_text else None
    return {"cache_text": cache_text, "batches": len(timer.step), "timed_batches": len(step),
            "step_s_median": statistics.median(step), "step_s_mean": statistics.fmean(step),
            "batch_s_median": statistics.median(batch) if batch else None, "fit_total_s": total,
            "images_per_s": args.batch_size / statistics.median(step), "encoder_s_per_batch_median": encode}


def encoder_time(module, datamodule, batch_size: int, repeats: int = 10) -> float:
    """The frozen encoder alone on training captions (tokenization included): what the cache removes."""
    import torch

    captions = datamodule.datasets["train"].captions
    times = []
    with torch.no_grad():
        for r in range(repeats):
            batch = captions[r * batch_size : (r + 1) * batch_size]
            t0 = time.perf_counter()
            module.encode(batch)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument("--out", type=Path, default=None)
    args, extra = parser.parse_known_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_folder(tmp / "data", args.images)
        # the cache is built before fit starts timing; build it once so "on" measures steady-state training
        results = [run(tmp / "data", tmp / "cache", on, args, extra) for on in (True, False)]
    on, off = results
    report = {
        "benchmark": "text_cache_speed",
        "what": "training-step time, frozen text encoder: cached features vs encoding in the step",
        "config": {"encoder": args.encoder, "image_size": args.image_size, "batch_size": args.batch_size,
                   "data": "folder (synthetic JPEGs, 5 captions of 9-15 words per image)", "overrides": extra},
        "machine": report_json.machine(),
        "cache_on": on, "cache_off": off,
        "encoder_share_of_uncached_step": off["encoder_s_per_batch_median"] / off["step_s_median"],
        "speedup_step": off["step_s_median"] / on["step_s_median"],
        "speedup_batch": (off["batch_s_median"] / on["batch_s_median"]) if on["batch_s_median"] else None,
    }
    report_json.write(report, args.out)


if __name__ == "__main__":
    main()
