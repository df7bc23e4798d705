"""Latency of the demo's API: one n-image request over HTTP to the real server, end to end, JSON.

    python benchmarks/demo_latency.py RUN/checkpoints/last.ckpt --n 8 --requests 20 --out latency.json

The model is loaded once (as demo.py does) and served by uvicorn on a free localhost port; each
request is a plain HTTP GET of /api/generate (text encoding, the EMA generator, the PNG, the
socket), timed from send to the last byte. After 3 warm-up requests each timed request asks for a
new seed, so no two are the same work. Reports mean, median and p90 in milliseconds, and the load
average, since other work on the machine slows a CPU-bound request.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import report as report_json  # noqa: E402 - benchmarks/report.py

WARMUP = 3


def main() -> None:
    from lightning_modules.demo import DemoModel, serving

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="RUN/checkpoints/last.ckpt or an export folder")
    parser.add_argument("--n", type=int, default=8, help="images per request")
    parser.add_argument("--requests", type=int, default=20, help="timed requests (after 3 warm-up ones)")
    parser.add_argument("--prompt", default="a large red circle in the center")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    start = time.perf_counter()
    model = DemoModel(args.checkpoint)
    load_s = time.perf_counter() - start
    times, size = [], 0
    load_before = os.getloadavg()
    with serving(model) as url:
        for i in range(WARMUP + args.requests):
            query = urllib.parse.urlencode({"prompt": args.prompt, "n": args.n, "seed": i})
            start = time.perf_counter()
            with urllib.request.urlopen(f"{url}/api/generate?{query}", timeout=600) as response:
                size = len(response.read())
            if i >= WARMUP:
                times.append((time.perf_counter() - start) * 1000)
    times.sort()
    config = model.module.run_config
    result = {"benchmark": "demo_latency", "what": f"one GET /api/generate of {args.n} images over HTTP (uvicorn)",
              "checkpoint": str(args.checkpoint), "batches_trained": int(model.module.batches_seen),
              "model": {"generator": config["model"]["generator"].get("_target_"),
                        "generator_base_channels": config["model"]["generator"].get("base_channels"),
                        "fusion": config["fusion"].get("_target_"), "encoder": config["encoder"].get("pretrained"),
                        "image_size": model.image_size},
              "images_per_request": args.n, "requests": args.requests, "warmup_requests": WARMUP,
              "model_load_s": round(load_s, 2), "mean_ms": round(statistics.mean(times), 1),
              "median_ms": round(statistics.median(times), 1), "p90_ms": round(times[int(0.9 * (len(times) - 1))], 1),
              "min_ms": round(times[0], 1), "png_bytes": size,
              "load_average_1min": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
              "machine": report_json.machine()}
    report_json.write(result, Path(args.out) if args.out else None)


if __name__ == "__main__":
    main()
