"""Training-step throughput (images/s) of a config, beside the same config with every speed feature off.

Times the whole training step, ``training_step`` as Lightning runs it: ``n_critic`` D steps, the lazy
MA-GP step on its batches, the G step and the EMA update. Data loading is outside the timed span
and text features are computed before it (what the text cache gives a frozen encoder). The first
``--warmup`` batches (compilation, allocator warm-up) are not timed; the figure is the **mean**
over the timed batches, so the batches that carry the lazy penalty count in proportion (use a
multiple of ``model.gp_every``; the default 16 is).

Both configurations run one after the other in fresh processes of one benchmark call:

* ``config``: the config as given (defaults on: ``python train.py`` with these overrides);
* ``reference``: the same config with every speed feature off: ``trainer.precision=32-true``,
  eager, contiguous memory, MA-GP in every D step, a second generator forward for the G step,
  plain (for-loop) Adam.

Usage: ``python benchmarks/throughput.py [--out FILE] [--batches N] [--warmup W] [hydra overrides ...]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import report as report_json  # noqa: E402 - benchmarks/report.py

REFERENCE = ["trainer.precision=32-true", "model.compile=false", "model.channels_last=false", "model.gp_every=1",
             "model.reuse_fake=false",
             "model.optimizer_g.fused=false", "model.optimizer_d.fused=false",
             "model.optimizer_g.foreach=false", "model.optimizer_d.foreach=false"]


def measure(overrides: list[str], batches: int, warmup: int, workdir: Path) -> dict:
    """Train ``warmup + batches`` batches of the composed config in this process; time each step."""
    import lightning as L
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    sys.path.insert(0, str(ROOT))
    from lightning_modules.training import build_data_and_module, build_trainer

    fixed = ["logger=none", "callbacks=none", "trainer.max_steps=-1", "trainer.limit_val_batches=0",
             "trainer.val_check_interval=null", "trainer.check_val_every_n_epoch=1000000",
             "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false",
             "+trainer.enable_checkpointing=false"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, *fixed], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(workdir)
    L.seed_everything(cfg.seed, verbose=False)
    datamodule, module = build_data_and_module(cfg)
    trainer = build_trainer(cfg)
    cuda = torch.cuda.is_available() and trainer.strategy.root_device.type == "cuda"
    times: list[float] = []

    class EncodeAhead(L.Callback):
        """Text features before the timed span, as the text cache delivers them."""

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if "text_tokens" not in batch:
                with torch.no_grad():
                    text = pl_module.encode(batch["caption"])
                batch.update(text_tokens=text.tokens, text_mask=text.mask, text_pooled=text.pooled)

    class Timer(L.Callback):
        start = 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if cuda:
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.start)
            if len(times) >= warmup + batches:
                trainer.should_stop = True

    trainer.callbacks[:0] = [EncodeAhead(), Timer()]
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(module, datamodule=datamodule)
    timed = times[warmup:]
    if len(timed) < batches:
        raise RuntimeError(f"only {len(times)} batches ran; expected {warmup + batches}")
    batch_size = int(cfg.data.batch_size)
    peak = (torch.cuda.max_memory_allocated() / 2**20, "cuda max_memory_allocated") if cuda else (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS")
    compiled = [name for name, fn in module._fast.items() if getattr(fn, "compiled", None) is not None]
    return {
        "images_per_s": batch_size / statistics.fmean(timed),
        "step_s_mean": statistics.fmean(timed), "step_s_median": statistics.median(timed),
        "step_s_min": min(timed), "step_s_max": max(timed),
        "timed_batches": len(timed), "warmup_batches": warmup, "step_s": timed, "warmup_step_s": times[:warmup],
        "device": str(trainer.strategy.root_device), "precision": str(trainer.precision),
        "precision_config": str(cfg.trainer.precision),
        "compile": cfg.model.compile, "compiled_networks": compiled,
        "memory_format": "channels_last" if cfg.model.channels_last else "contiguous",
        "gp_every": int(cfg.model.gp_every), "reuse_fake": bool(cfg.model.reuse_fake),
        "optimizer": {k: {"fused": cfg.model[k].get("fused"), "foreach": cfg.model[k].get("foreach")}
                      for k in ("optimizer_g", "optimizer_d")},
        "batch_size": batch_size, "image_size": int(cfg.data.image_size), "model": cfg.model._target_,
        "fusion": cfg.fusion._target_, "encoder": str(cfg.encoder.get("pretrained")),
        "base_channels": {"generator": int(cfg.model.generator.base_channels),
                          "discriminator": int(cfg.model.discriminator.base_channels)},
        "peak_memory_mb": peak[0], "peak_memory_kind": peak[1],
        "overrides": overrides,
    }


def run_child(overrides: list[str], args, tmp: Path, name: str, script: str = __file__,
              flags: tuple[str, ...] = ()) -> dict:
    """Runs ``script --child OUT --batches N --warmup W *flags *overrides`` in a fresh process (this
    file's ``measure``, or another benchmark's child mode built on it) and returns its JSON."""
    out = tmp / f"{name}.json"
    cmd = [sys.executable, script, "--child", str(out), "--batches", str(args.batches), "--warmup", str(args.warmup),
           *flags, *overrides]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp)
    if result.returncode != 0:
        sys.exit(f"{name} run failed:\n{result.stderr[-6000:]}")
    return json.loads(out.read_text())


def time_forms(forms: dict[str, Callable[[], None]], repeats: int, warmup: int = 3) -> dict:
    """Alternates the calls of ``forms`` (reference and change of one function), ``warmup`` untimed
    rounds, then ``repeats`` timed ones; returns each form's mean and times in ms and the speedup
    (``reference`` over ``change``)."""
    times: dict[str, list[float]] = {name: [] for name in forms}
    for i in range(repeats + warmup):
        for name, fn in forms.items():
            start = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append((time.perf_counter() - start) * 1e3)
    means = {name: statistics.fmean(t) for name, t in times.items()}
    return {"reference_ms_mean": means["reference"], "change_ms_mean": means["change"],
            "speedup": means["reference"] / means["change"], "repeats": repeats,
            "reference_ms": times["reference"], "change_ms": times["change"]}


def steps_side_by_side(overrides: list[str], args, script: str, reference_flag: str) -> dict:
    """The whole training step of the reference (``script --child ... reference_flag``) and of the
    change, in fresh processes in the order reference, change, reference, change; each form's mean
    over all its timed batches."""
    runs: dict[str, list[dict]] = {"reference": [], "change": []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(2):
            for name in ("reference", "change"):
                flags = (reference_flag,) if name == "reference" else ()
                runs[name].append(run_child(overrides, args, Path(tmp), f"{name}{round_}", script=script, flags=flags))
    step = {name: statistics.fmean(t for r in rs for t in r["step_s"]) for name, rs in runs.items()}
    batch = runs["change"][0]["batch_size"]
    return {"reference_s_mean": step["reference"], "change_s_mean": step["change"],
            "reference_images_per_s": batch / step["reference"], "change_images_per_s": batch / step["change"],
            "speedup": step["reference"] / step["change"], "precision": runs["change"][0]["precision"],
            "batch_size": batch, "timed_batches_per_form": sum(r["timed_batches"] for r in runs["change"]),
            "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--batches", type=int, default=16, help="timed batches (>= 8; a multiple of model.gp_every)")
    parser.add_argument("--warmup", type=int, default=6, help="untimed batches first (compilation)")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-reference", action="store_true", help="measure the config alone")
    args, overrides = parser.parse_known_args()
    if args.batches < 8:
        parser.error("--batches must be >= 8")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child:
        with tempfile.TemporaryDirectory() as tmp:
            result = measure(overrides, args.batches, args.warmup, Path(tmp))
        args.child.write_text(json.dumps(result))
        return

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        reference = None if args.no_reference else run_child([*overrides, *REFERENCE], args, tmp, "reference")
        config = run_child(overrides, args, tmp, "config")
    report = {
        "benchmark": "throughput",
        "what": "images/s of the whole training step (D steps, lazy MA-GP step, G step, EMA), mean over timed "
                "batches; data loading and text encoding outside the timed span",
        "command": "python benchmarks/throughput.py " + " ".join(overrides),
        "machine": report_json.machine(),
        "images_per_s": config["images_per_s"],
        "speedup": config["images_per_s"] / reference["images_per_s"] if reference else None,
        "device": config["device"], "precision": config["precision"], "compile": config["compile"],
        "memory_format": config["memory_format"], "batch_size": config["batch_size"],
        "image_size": config["image_size"], "peak_memory_mb": config["peak_memory_mb"],
        "config": config,
        "reference": reference,
    }
    report_json.write(report, args.out)


if __name__ == "__main__":
    main()
