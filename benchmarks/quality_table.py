"""Markdown table of ``shapes_quality.py`` reports: the last point of each run's curve.

Usage: ``python benchmarks/quality_table.py [--at-batches N] LABEL=FILE.json [LABEL=FILE.json ...]``;
the same label given twice (two seeds) gets one row per file and a mean row with the spread. With
``--at-batches N`` a last column gives whole-caption accuracy at batch N of each curve (the same
number of batches for every run, whatever the machine's speed while it ran).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

KEYS = ("caption_accuracy", "accuracy_color", "accuracy_size", "accuracy_shape", "accuracy_position")


def row(label: str, seed: str, batches: str, values: list[str]) -> str:
    return f"| {label} | {seed} | {batches} | " + " | ".join(values) + " |"


def at_batches(report: dict, n: int) -> float:
    for point in report["curve"]:
        if point["batches"] == n:
            return point["caption_accuracy"]
    raise SystemExit(f"{report.get('overrides')}: no validation at batch {n} in its curve "
                     f"(it has {[p['batches'] for p in report['curve']]})")


def spread(values: list[float]) -> str:
    return f"**{sum(values) / len(values):.3f}** ± {(max(values) - min(values)) / 2:.3f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--at-batches", type=int, default=None, help="add whole-caption accuracy at this batch")
    parser.add_argument("runs", nargs="+", metavar="LABEL=FILE.json")
    args = parser.parse_args(argv)
    groups: dict[str, list[dict]] = defaultdict(list)
    for arg in args.runs:
        label, _, path = arg.rpartition("=")  # the label may hold "=" (a config override)
        groups[label].append(json.loads(open(path).read()))
    extra = [f"caption at {args.at_batches} batches"] if args.at_batches else []
    header = ["configuration", "seed", "batches", "caption (all right)", "colour", "size", "shape", "position", *extra]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for label, reports in groups.items():
        finals = [r["final"] for r in reports]
        for r, final in zip(reports, finals):
            seed = next((o.split("=", 1)[1] for o in r["overrides"] if o.startswith("seed=")), "0")  # train.yaml: 0
            cells = [f"{final[k]:.3f}" for k in KEYS]
            if args.at_batches:
                cells.append(f"{at_batches(r, args.at_batches):.3f}")
            print(row(label, seed, str(r["batches_trained"]), cells))
        if len(reports) > 1:
            cells = [spread([f[k] for f in finals]) for k in KEYS]
            if args.at_batches:
                cells.append(spread([at_batches(r, args.at_batches) for r in reports]))
            print(row(f"{label}, mean ± half-range", "", "", cells))


if __name__ == "__main__":
    main()
