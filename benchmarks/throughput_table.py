"""images/s per speed setting: the reference (every switch off), each switch alone on top of it, and
the defaults, one ``throughput.py`` measurement each, in one call on one machine (JSON + a table).

Usage: ``python benchmarks/throughput_table.py [--out FILE] [--batches N] [--compile] [hydra overrides ...]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import report as report_json  # noqa: E402 - benchmarks/report.py
from throughput import REFERENCE  # noqa: E402

ALONE = {  # each switch turned on over the reference
    "channels_last": ["model.channels_last=true"],
    "lazy MA-GP (gp_every=4)": ["model.gp_every=4"],
    "reuse_fake": ["model.reuse_fake=true"],
    "fused Adam": ["model.optimizer_g.fused=true", "model.optimizer_d.fused=true"],
    "bf16-mixed": ["trainer.precision=bf16-mixed"],
}


def measure(overrides: list[str], batches: int, warmup: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        cmd = [sys.executable, str(HERE / "throughput.py"), "--no-reference", "--out", str(out),
               "--batches", str(batches), "--warmup", str(warmup), *overrides]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            return {"error": result.stderr.strip().splitlines()[-1][:500] if result.stderr.strip() else "failed"}
        return json.loads(out.read_text())["config"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also the defaults + model.compile=true")
    args, overrides = parser.parse_known_args()
    settings = {"reference (all off)": REFERENCE}
    settings.update({name: [*REFERENCE, *extra] for name, extra in ALONE.items()})
    settings["defaults"] = []
    if args.compile:
        settings["defaults + compile"] = ["model.compile=true"]
    rows = []
    for name, extra in settings.items():
        warmup = args.warmup + (3 if "compile" in name else 0)
        r = measure([*overrides, *extra], args.batches, warmup)
        if "error" in r:
            rows.append({"setting": name, "overrides": extra, "error": r["error"]})
            print(f"{name}: failed: {r['error']}", file=sys.stderr, flush=True)
            continue
        rows.append({"setting": name, "overrides": extra, "images_per_s": r["images_per_s"],
                     "step_s_mean": r["step_s_mean"], "precision": r["precision"], "peak_memory_mb": r["peak_memory_mb"],
                     "warmup_step_s": r["warmup_step_s"]})
        print(f"{name}: {r['images_per_s']:.2f} images/s", file=sys.stderr, flush=True)
    base = rows[0]["images_per_s"]
    for row in rows:
        if "images_per_s" in row:
            row["vs_reference"] = row["images_per_s"] / base
    report = {"benchmark": "throughput_table", "command": "python benchmarks/throughput_table.py " + " ".join(overrides),
              "machine": report_json.machine(), "timed_batches": args.batches, "warmup_batches": args.warmup,
              "rows": rows}
    table = ["| setting | images/s | vs reference |", "|---|---|---|"]
    table += [f"| {r['setting']} | {r['images_per_s']:.2f} | {r['vs_reference']:.2f}x |" if "images_per_s" in r
              else f"| {r['setting']} | failed: {r['error'][:80]} | |" for r in rows]
    report["markdown"] = "\n".join(table)
    report_json.write(report, args.out)


if __name__ == "__main__":
    main()
