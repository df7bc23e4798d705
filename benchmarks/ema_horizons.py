"""Several EMA horizons of one training run, each scored on the test captions (JSON).

The EMA of G never feeds back into training, so one run can carry several: besides the module's
own average (``model.ema_beta``), :class:`EmaHorizons` keeps one more copy per ``--betas`` value,
updated after every batch exactly as the module updates its own (the same warm-up,
``min(beta, (1 + n) / (10 + n))``). When the fit ends each copy is written as
``checkpoints/ema_<beta>.ckpt``: the run's last checkpoint with that copy as its EMA generator.
Then ``evaluate.py`` scores ``last.ckpt`` and every copy on the same test captions, so the
horizons are compared on one training trajectory, with no seed-to-seed noise between them.

Usage: ``python benchmarks/ema_horizons.py --betas 0.99 0.995 [--final-eval N] [--run-dir DIR]
[--out FILE] [train.py overrides ...]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
import report as report_json  # noqa: E402 - benchmarks/report.py
from lightning_modules.components.ema import ema_beta, ema_update, make_ema  # noqa: E402


class EmaHorizons(L.Callback):
    """Extra EMA copies of G, one per beta, written beside ``last.ckpt`` when the fit ends."""

    def __init__(self, betas: list[float]):
        self.betas = [float(b) for b in betas]
        self.copies = {}

    def on_fit_start(self, trainer, pl_module) -> None:
        self.copies = {b: make_ema(pl_module.generator_ema) for b in self.betas}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        n = pl_module._batches - 1  # the index the module's own update used (it counts after updating)
        for beta, copy in self.copies.items():
            ema_update(copy, pl_module.generator, ema_beta(n, beta, pl_module.ema_warmup))

    def on_train_end(self, trainer, pl_module) -> None:
        own = {k: v.clone() for k, v in pl_module.generator_ema.state_dict().items()}
        folder = Path(trainer.checkpoint_callback.dirpath)  # beside last.ckpt
        for beta, copy in self.copies.items():
            pl_module.generator_ema.load_state_dict(copy.state_dict())
            trainer.save_checkpoint(folder / f"ema_{beta}.ckpt")
        pl_module.generator_ema.load_state_dict(own)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--betas", type=float, nargs="+", required=True)
    parser.add_argument("--final-eval", type=int, default=512, help="test samples per checkpoint")
    parser.add_argument("--run-dir", type=Path, default=None, help="keep the run folder here")
    parser.add_argument("--out", type=Path, default=None)
    args, overrides = parser.parse_known_args()
    betas = ",".join(str(b) for b in args.betas)
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run_dir or Path(tmp) / "run"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}
        t0 = time.perf_counter()
        result = subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides, f"hydra.run.dir={run}",
                                 "callbacks.progress_bar=null", "+callbacks.ema_horizons._target_=ema_horizons.EmaHorizons",
                                 f"+callbacks.ema_horizons.betas=[{betas}]"], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if result.returncode != 0:
            sys.exit(f"train.py failed:\n{result.stderr[-4000:]}")
        import yaml

        cfg = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
        checkpoints = run / "checkpoints"
        batches = report_json.batches_seen(checkpoints / "last.ckpt")
        scored = {f"own ({cfg['model']['ema_beta']})": report_json.evaluate(checkpoints / "last.ckpt", args.final_eval,
                                                                            Path(tmp) / "last", env)}
        for beta in args.betas:
            scored[str(beta)] = report_json.evaluate(checkpoints / f"ema_{beta}.ckpt", args.final_eval,
                                                     Path(tmp) / f"ema_{beta}", env)
    report_json.write({
        "benchmark": "ema_horizons",
        "what": "test metrics (evaluate.py, split=test) of one run's G averaged over several EMA horizons; 'own' is "
                "model.ema_beta, the others extra copies updated after every batch with the same warm-up",
        "overrides": overrides,
        "config": {k: cfg[k] for k in ("data", "model", "trainer") if k in cfg},
        "machine": report_json.machine(),
        "wall_s": wall,
        "batches_trained": batches,
        "final_eval": scored,
    }, args.out)


if __name__ == "__main__":
    main()
