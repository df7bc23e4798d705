"""Markdown table of ``shapes_quality.py`` reports: the last point of each run's curve.

Usage: ``python benchmarks/quality_table.py LABEL=FILE.json [LABEL=FILE.json ...]``; the same label
given twice (two seeds) gets one row per file and a mean row with the spread.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

KEYS = ("caption_accuracy", "accuracy_color", "accuracy_size", "accuracy_shape", "accuracy_position")


def row(label: str, seed: str, batches: str, values: list[float]) -> str:
    return f"| {label} | {seed} | {batches} | " + " | ".join(values) + " |"


def main(args: list[str]) -> None:
    groups: dict[str, list[dict]] = defaultdict(list)
    for arg in args:
        label, _, path = arg.rpartition("=")  # the label may hold "=" (a config override)
        groups[label].append(json.loads(open(path).read()))
    print("| configuration | seed | batches | caption (all right) | colour | size | shape | position |")
    print("|---|---|---|---|---|---|---|---|")
    for label, reports in groups.items():
        finals = [r["final"] for r in reports]
        for r, final in zip(reports, finals):
            seed = next((o.split("=", 1)[1] for o in r["overrides"] if o.startswith("seed=")), "0")  # train.yaml: 0
            print(row(label, seed, str(r["batches_trained"]), [f"{final[k]:.3f}" for k in KEYS]))
        if len(reports) > 1:
            cells = []
            for k in KEYS:
                values = [f[k] for f in finals]
                cells.append(f"**{sum(values) / len(values):.3f}** ± {(max(values) - min(values)) / 2:.3f}")
            print(row(f"{label}, mean ± half-range", "", "", cells))


if __name__ == "__main__":
    main(sys.argv[1:])
