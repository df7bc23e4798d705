"""Quality against training images seen, for a fixed training budget (JSON): shapes or real data.

Runs ``train.py`` (the default configuration unless overrides are given) in a fresh run folder, then
reads the run's ``csv/metrics.csv``: the training callback's metrics at each validation (256 EMA
samples of fixed val captions; on shapes ``metrics/caption_accuracy`` and the per-attribute
accuracies, on labelled real data such as ``experiment=emoji64`` the reference FD, precision/recall,
label accuracy and memorisation) against ``train/batches`` x batch size. Compare runs of two
commits or two configs on the same machine.

With ``--minutes M`` the run trains for M minutes of wall-clock time (``trainer.max_time``, no step
limit): compare configurations at an equal budget. With ``--final-eval N`` the run's
``last.ckpt`` is scored by ``evaluate.py`` (its default metrics for the run's data, N samples of the
test split).

With ``--run-dir DIR`` the run folder is kept there (samples, checkpoints, logs) instead of a
temporary folder; with ``--from-run DIR`` nothing is trained: the report is made from a finished run
folder (e.g. one of ``python train.py``, whose measured wall time ``--wall-s`` records).

Usage: ``python benchmarks/shapes_quality.py [--out FILE] [--minutes M] [--final-eval N] [--run-dir DIR]
[--from-run DIR] [train.py overrides ...]``
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import report as report_json  # noqa: E402 - benchmarks/report.py


def curve(metrics_csv: Path, batch_size: int) -> list[dict]:
    rows = list(csv.DictReader(metrics_csv.open()))
    last_batches = 0.0
    points = []
    for row in rows:
        if row.get("train/batches"):
            last_batches = float(row["train/batches"])
        if any(v and k.startswith("metrics/") and k != "metrics/samples" for k, v in row.items()):
            point = {"batches": int(last_batches), "images_seen": int(last_batches) * batch_size}
            for key, value in row.items():  # caption accuracy (overall, per subset), diversity, oracle FD
                if key.startswith("metrics/") and key != "metrics/samples" and value:
                    point[key.removeprefix("metrics/")] = float(value)
            points.append(point)
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--minutes", type=float, default=None, help="wall-clock training budget")
    parser.add_argument("--final-eval", type=int, default=0, help="score last.ckpt with evaluate.py on N test samples")
    parser.add_argument("--run-dir", type=Path, default=None, help="keep the run folder here")
    parser.add_argument("--from-run", type=Path, default=None, help="report on this finished run folder")
    parser.add_argument("--wall-s", type=float, default=None, help="with --from-run: the run's measured wall time")
    args, overrides = parser.parse_known_args()
    budget = []
    if args.minutes:
        seconds = int(args.minutes * 60)
        budget = ["trainer.max_steps=-1", f"++trainer.max_time=00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:"
                                          f"{seconds % 60:02d}"]

    with tempfile.TemporaryDirectory() as tmp:
        run = args.from_run or args.run_dir or Path(tmp) / "run"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
        wall = args.wall_s
        if args.from_run is None:
            t0 = time.perf_counter()
            result = subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides, *budget,
                                     f"hydra.run.dir={run}", "callbacks.progress_bar=null"],
                                    env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if result.returncode != 0:
                sys.exit(f"train.py failed:\n{result.stderr[-4000:]}")
        final_eval = None
        if args.final_eval:
            final_eval = report_json.evaluate(run / "checkpoints" / "last.ckpt", args.final_eval, Path(tmp) / "eval", env)
        config = (run / ".hydra" / "config.yaml").read_text()
        import yaml

        cfg = yaml.safe_load(config)
        points = curve(run / "csv" / "metrics.csv", int(cfg["data"]["batch_size"]))
        batches_trained = report_json.batches_seen(run / "checkpoints" / "last.ckpt")
        best = json.loads((run / "checkpoints" / "best.json").read_text()) if (run / "checkpoints" / "best.json").is_file() else None
    data_target = str(cfg["data"].get("_target_"))
    report = {
        "benchmark": "shapes_quality",
        "what": ("pairs metrics (oracle per object: scene, binding, relation, count, per subset; EMA samples of fixed "
                 "val captions) vs training images seen" if ".shapes_pairs" in data_target else
                 "shapes caption accuracy (oracle, 256 EMA samples of fixed val captions, per subset) and diversity "
                 "(open_tv, spread_ratio) vs training images seen" if ".shapes" in data_target else
                 "real-data metrics of the training callback (reference network: FD, precision/recall, label "
                 "accuracy, memorisation; 256 EMA samples of fixed val captions) vs training images seen"),
        "overrides": overrides,
        "run": str(args.from_run) if args.from_run else None,
        "budget_minutes": args.minutes,
        "config": {k: cfg[k] for k in ("data", "model", "trainer") if k in cfg},
        "machine": report_json.machine(),
        "wall_s": wall,
        "batches_trained": batches_trained,
        "final": points[-1] if points else None,
        "best": best,
        "final_eval": final_eval,
        "curve": points,
    }
    report_json.write(report, args.out)


if __name__ == "__main__":
    main()
