"""Write ``docs/results.md`` from ``benchmarks/results/*.json`` (the generalisation benchmark).

Reads the reports of ``benchmarks/shapes_quality.py --final-eval 512`` named

* ``gen_default.json``: the default run (``python train.py``), its test-split scores and curve;
* ``gen<M>_<arm>_seed<S>.json``: arms compared at an equal budget of ``M`` minutes (``--minutes M``),
  two seeds each, side by side on one machine;
* ``pairs_default.json``: ``python train.py experiment=shapes_pairs`` (two objects and a relation), scored
  with the pairs metrics on 512 test captions, and its curve;
* ``pairs<M>_<arm>_seed<S>.json``: two-object arms at an equal budget of ``M`` minutes;
* ``emoji64_default.json``: ``python train.py experiment=emoji64`` (real drawings), scored on the
  test emoji (``--final-eval 653``), and its curve;
* ``emoji64_<M>_<arm>_seed<S>.json``: emoji64 arms at an equal budget of ``M`` minutes;
* ``ema_horizons_<name>.json``: one run's generator averaged over several EMA horizons
  (``benchmarks/ema_horizons.py``), each scored on the test captions;
* ``default_run_<name>.json``: whole default runs with one option changed (or longer), each scored
  as the default run is.

Usage: ``python benchmarks/results_page.py [--out docs/results.md]``
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
COLUMNS = (  # (metrics.json key, column title)
    ("caption_accuracy/seen/caption", "seen"),
    ("caption_accuracy/unseen_composition/caption", "unseen composition"),
    ("caption_accuracy/unseen_phrasing/caption", "unseen phrasing"),
    ("diversity/open_tv", "open_tv (lower)"),
    ("diversity/spread_ratio", "spread_ratio"),
)
TARGETS = {"seen": ">= 0.80", "unseen composition": ">= 0.60", "unseen phrasing": ">= 0.65",
           "open_tv (lower)": "<= 0.15", "spread_ratio": ">= 0.5"}
CURVE = (("caption_accuracy/seen", "seen"), ("caption_accuracy/unseen_composition", "unseen comp."),
         ("caption_accuracy/unseen_phrasing", "unseen phr."), ("accuracy/seen/shape", "seen shape"),
         ("diversity/open_tv", "open_tv"), ("diversity/spread_ratio", "spread"))


def scores(report: dict) -> dict[str, float]:
    return (report.get("final_eval") or {}).get("metrics", {})


def machine(report: dict) -> str:
    m = report.get("machine", {})
    if isinstance(m, str):  # written out by hand in a check's JSON
        return m
    return f"{m.get('cpu_model', '?')}, {m.get('cpu_count', '?')} cores, {m.get('torch_threads', '?')} torch thread(s)"


def cell(values: dict[str, float], key: str) -> str:
    """One table cell: the value to three decimals, or "-" where the report has no such key."""
    return f"{values[key]:.3f}" if key in values else "-"


def curve_rows(curve: list[dict], keys, every: int | None = None) -> list[str]:
    """Table rows ``| batches | value | ...`` of a report's curve: every ``every`` batches and the
    last point (every point when ``every`` is None)."""
    return [f"| {point['batches']} | " + " | ".join(cell(point, k) for k in keys) + " |" for point in curve
            if every is None or point["batches"] % every == 0 or point is curve[-1]]


def cells(values: dict[str, float], columns=COLUMNS) -> list[str]:
    return [cell(values, k) for k, _ in columns]


def mean_cells(reports: list[dict], columns=COLUMNS) -> list[str]:
    out = []
    for key, _ in columns:
        xs = [scores(r)[key] for r in reports if key in scores(r)]
        out.append(f"**{sum(xs) / len(xs):.3f}** ± {(max(xs) - min(xs)) / 2:.3f}" if xs else "-")
    return out


def overrides(report: dict) -> str:
    shown = [o for o in report.get("overrides", []) if not o.startswith(("seed=", "paths."))]
    return " ".join(f"`{o}`" for o in shown) or "(the default)"


def default_section(report: dict) -> list[str]:
    values = scores(report)
    lines = ["## The default run (`python train.py`)", "",
             f"{report['batches_trained']} batches in {report['wall_s'] / 60:.1f} minutes of wall-clock time "
             f"({report.get('wall_note', 'training only')}), {machine(report)}. Then `python evaluate.py ckpt_path=RUN/checkpoints/last.ckpt "
             "metrics=[caption_accuracy] num_samples=512 split=test`:", "",
             "| | " + " | ".join(t for _, t in COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS),
             "| target | " + " | ".join(TARGETS[t] for _, t in COLUMNS) + " |",
             "| measured | " + " | ".join(cells(values)) + " |",
             "| real renders (ceiling) | " + " | ".join(
                 f"{values[k.replace('/caption', '/real_reference')]:.3f}" if k.endswith("/caption") else
                 (f"{values['diversity/real_open_tv']:.3f}" if k == "diversity/open_tv" else "1 by definition")
                 for k, _ in COLUMNS) + " |", ""]
    per = [f"{a}: " + ", ".join(f"{s} {values.get(f'caption_accuracy/{s}/{a}', float('nan')):.3f}"
                                for s in ("seen", "unseen_composition", "unseen_phrasing"))
           for a in ("shape", "color", "size", "position")]
    lines += ["Per attribute (seen, unseen composition, unseen phrasing): " + "; ".join(per) + ".",
              f"Caption accuracy of the diversity prompts' samples: open {values.get('diversity/open_caption', 0):.3f}, "
              f"fully named {values.get('diversity/spread_caption', 0):.3f}; open_tv before its finite-sample floor "
              f"({values.get('diversity/open_tv_floor', 0):.3f}) is removed: {values.get('diversity/open_tv_raw', 0):.3f}.",
              "", "Validation curve (256 val captions per point, plus the diversity blocks):", "",
              "| batches | " + " | ".join(t for _, t in CURVE) + " |", "|---|" + "---|" * len(CURVE)]
    lines += curve_rows(report["curve"], [k for k, _ in CURVE], every=200)
    return lines + [""]


def budget_section(budget: str, arms: dict[str, list[dict]], columns=COLUMNS, heading: str = "Equal budget",
                   higher: str = "positive: GAN-GA higher, which for open_tv is worse") -> list[str]:
    first = next(iter(arms.values()))[0]
    minutes, _, block = budget.partition("-")
    notes = [r["block_note"] for rs in arms.values() for r in rs if r.get("block_note")]
    lines = [f"## {heading}: {minutes} minutes of wall-clock time per run" + (f" (block {block})" if block else ""), "", *(notes[:1] + [""] if notes else []),
             f"Each run trains for {minutes} minutes (`benchmarks/shapes_quality.py --minutes {minutes} --final-eval 512`), "
             "then its `last.ckpt` is scored on 512 test captions. The runs of one row pair ran side by side, one "
             f"thread each (`OMP_NUM_THREADS=1`), {machine(first)}.", "",
             "| arm | overrides | seed | batches | " + " | ".join(t for _, t in columns) + " |",
             "|---|---|---|---|" + "---|" * len(columns)]
    for arm, reports in sorted(arms.items(), key=lambda kv: (kv[0] != "gan_ga", kv[0])):
        for r in sorted(reports, key=lambda r: r["_seed"]):
            label = f"{arm}: {r['note']}" if r.get("note") else arm
            lines.append(f"| {label} | {overrides(r)} | {r['_seed']} | {r['batches_trained']} | "
                         + " | ".join(cells(scores(r), columns)) + " |")
        if len(reports) > 1:
            lines.append(f"| {arm}, mean ± half-range | | | | " + " | ".join(mean_cells(reports, columns)) + " |")
    reference = arms.get("gan_ga")
    if reference:
        lines += ["", f"GAN-GA minus each other arm, per seed ({higher}):", ""]
        for arm, reports in arms.items():
            if arm == "gan_ga":
                continue
            per_seed = []
            for r in sorted(reports, key=lambda r: r["_seed"]):
                ref = next((x for x in reference if x["_seed"] == r["_seed"]), None)
                if ref is None:
                    continue
                diffs = ", ".join(f"{title} {scores(ref)[k] - scores(r)[k]:+.3f}" for k, title in columns
                                  if k in scores(ref) and k in scores(r))
                per_seed.append(f"seed {r['_seed']}: {diffs}")
            if per_seed:
                lines.append(f"* against {arm}: " + "; ".join(per_seed))
    return lines + [""]


REAL_COLUMNS = (  # emoji64: (metrics.json key, column title)
    ("reference/fd", "FD (lower)"),
    ("reference/precision", "precision"),
    ("reference/recall", "recall"),
    ("labels/group", "group acc."),
    ("labels/group_ratio", "group / ceiling"),
    ("labels/subgroup", "subgroup acc."),
    ("labels/subgroup_ratio", "subgroup / ceiling"),
    ("memorisation/nn_ratio", "NN ratio"),
)
REAL_TARGETS = {"group / ceiling": ">= 0.6", "subgroup / ceiling": ">= 0.4"}


def real_cells(values: dict[str, float]) -> list[str]:
    return [cell(values, k) for k, _ in REAL_COLUMNS]


def emoji_default_section(report: dict) -> list[str]:
    values = scores(report)
    lines = ["## emoji64: `python train.py experiment=emoji64`", "",
             f"{report['batches_trained']} batches, {report['wall_s'] / 60:.1f} minutes of wall-clock time in all "
             f"({report.get('wall_note', 'the whole command')}), {machine(report)}. Then `python evaluate.py "
             "ckpt_path=RUN/checkpoints/last.ckpt split=test` (its defaults for labelled real data; all 653 test "
             "drawings of the 165 test emoji, first caption = the emoji's name):", "",
             "| | " + " | ".join(t for _, t in REAL_COLUMNS) + " |", "|---|" + "---|" * len(REAL_COLUMNS),
             "| target | " + " | ".join(REAL_TARGETS.get(t, "") for _, t in REAL_COLUMNS) + " |",
             "| generated | " + " | ".join(real_cells(values)) + " |",
             "| real test drawings (ceiling) | " + " | ".join(
                 f"{values[k + '_real']:.3f}" if k + "_real" in values else
                 ("1 by definition" if k.endswith("_ratio") and k.startswith("labels") else "")
                 for k, _ in REAL_COLUMNS) + " |", "",
             f"Memorisation: median feature distance to the nearest training drawing "
             f"{values.get('memorisation/nn_distance', float('nan')):.3f} for generated images against "
             f"{values.get('memorisation/nn_distance_real', float('nan')):.3f} for the real test drawings.", "",
             "Validation curve (256 val captions of 74 val emoji per point):", "",
             "| batches | " + " | ".join(t for _, t in REAL_COLUMNS) + " |", "|---|" + "---|" * len(REAL_COLUMNS)]
    lines += curve_rows(report["curve"], [k for k, _ in REAL_COLUMNS])
    return lines + [""]


def emoji_budget_section(minutes: str, arms: dict[str, list[dict]]) -> list[str]:
    first = next(iter(arms.values()))[0]
    lines = [f"## emoji64, equal budget: {minutes} minutes of wall-clock time per run", "",
             f"`benchmarks/emoji64_compare.sh {minutes} DATA_ROOT`: each run trains `experiment=emoji64` for {minutes} "
             "minutes (`trainer.max_time`, `data.num_workers=1`), then its `last.ckpt` is scored on the 653 test "
             "drawings (`--final-eval 653`). Two runs at a time, side by side, one thread each "
             f"(`OMP_NUM_THREADS=1`), {machine(first)}: GAN-GA beside `fusion=affine`, DCGAN beside the VAE-GAN, "
             "one pair per seed. The pairs ran at different times of one session, some beside test runs on the "
             "same machine, so batch counts differ between pairs: compare the two arms of a pair.", "",
             "| arm | overrides | seed | batches | " + " | ".join(t for _, t in REAL_COLUMNS) + " |",
             "|---|---|---|---|" + "---|" * len(REAL_COLUMNS)]
    for arm, reports in sorted(arms.items(), key=lambda kv: (kv[0] != "gan_ga", kv[0])):
        for r in sorted(reports, key=lambda r: r["_seed"]):
            own = [o for o in r.get("overrides", []) if not o.startswith(
                ("experiment=", "data.root=", "trainer.max_time=", "data.num_workers=", "seed=", "paths."))]
            lines.append(f"| {arm} | {' '.join(f'`{o}`' for o in own) or '(the preset)'} | {r['_seed']} | "
                         f"{r['batches_trained']} | " + " | ".join(real_cells(scores(r))) + " |")
        if len(reports) > 1:
            means = []
            for key, _ in REAL_COLUMNS:
                xs = [scores(r)[key] for r in reports if key in scores(r)]
                means.append(f"**{sum(xs) / len(xs):.3f}** ± {(max(xs) - min(xs)) / 2:.3f}" if xs else "-")
            lines.append(f"| {arm}, mean ± half-range | | | | " + " | ".join(means) + " |")
    notes = sorted({r["note"] for rs in arms.values() for r in rs if r.get("note")})
    marked = ", ".join(f"{arm} seed {r['_seed']}" for arm, rs in sorted(arms.items()) for r in rs if r.get("note"))
    lines += ["", f"Note ({marked}): {notes[0]}."] if notes else []
    return lines + [""]


PAIRS = ("scene", "binding", "relation", "count")
PAIRS_TARGETS = {"scene": ">= 0.40", "binding": ">= 0.60", "relation": ">= 0.75", "count": ""}
PAIR_SUBSETS = ("seen", "unseen_composition", "unseen_phrasing")
PAIRS_COLUMNS = tuple((f"pairs/{s}/{m}", f"{m} ({s.replace('_', ' ')})") for s in PAIR_SUBSETS[:2]
                      for m in ("scene", "binding", "relation", "count"))


def pairs_section(report: dict) -> list[str]:
    """``python train.py experiment=shapes_pairs``: the pairs metrics per test subset, and the curve."""
    values = scores(report)
    lines = ["## Two objects and a relation (`python train.py experiment=shapes_pairs`)", "",
             f"{report['batches_trained']} batches in {report['wall_s'] / 60:.1f} minutes of wall-clock time "
             f"({report.get('wall_note', 'training only')}), {machine(report)}. Then `python evaluate.py "
             "ckpt_path=RUN/checkpoints/last.ckpt num_samples=512 split=test` (the pairs metrics are a pairs "
             "run's defaults); targets on seen compositions:", "",
             "| | " + " | ".join(f"pairs/{m}" for m in PAIRS) + " |", "|---|" + "---|" * len(PAIRS),
             "| target (seen) | " + " | ".join(PAIRS_TARGETS[m] for m in PAIRS) + " |"]
    for subset, prefix in [*((s, f"pairs/{s}/") for s in PAIR_SUBSETS), ("all", "pairs/")]:
        lines.append(f"| {subset} | " + " | ".join(cell(values, prefix + m) for m in PAIRS) + " |")
    lines += ["", "Validation curve (the training callback's pairs metrics on fixed val captions, every subset together):", "",
              "| batches | " + " | ".join(PAIRS) + " |", "|---|" + "---|" * len(PAIRS)]
    lines += curve_rows(report["curve"], [f"pairs/{m}" for m in PAIRS], every=400)
    return lines + [""]


def budget_runs(prefix: str) -> dict[str, dict[str, list[dict]]]:
    """``<prefix><minutes>[-<block>]_<arm>_seed<S>.json`` -> {"minutes" or "minutes-block": {arm:
    [reports]}}, ascending; a block is a later set of runs at the same budget (other code), compared
    within itself."""
    budgets: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(RESULTS.glob(f"{prefix}*_*_seed*.json")):
        match = re.fullmatch(rf"{re.escape(prefix)}(\d+(?:-[a-z0-9]+)?)_(.+)_seed(\d+)\.json", path.name)
        if match:
            report = json.loads(path.read_text())
            report["_seed"] = int(match.group(3))
            budgets[match.group(1)][match.group(2)].append(report)
    return dict(sorted(budgets.items()))


def ema_section(paths: list[Path]) -> list[str]:
    """``ema_horizons_*.json``: one training run, its G averaged over several EMA horizons."""
    if not paths:
        return []
    reports = [json.loads(p.read_text()) for p in paths]
    lines = ["## EMA horizons of one run (`benchmarks/ema_horizons.py`)", "",
             "The EMA of G never feeds back into training, so one run carries several averages (the module's own "
             "and one copy per extra beta, each with the same warm-up `min(beta, (1 + n) / (10 + n))`); each is "
             "scored on 512 test captions. The rows of one seed share one training trajectory. "
             f"{machine(reports[0])}.", "",
             "| run | seed | batches | minutes | EMA beta cap | " + " | ".join(t for _, t in COLUMNS) + " |",
             "|---|---|---|---|---|" + "---|" * len(COLUMNS)]
    for report in reports:
        seed = next((o.split("=", 1)[1] for o in report.get("overrides", []) if o.startswith("seed=")), "0")
        command = " ".join(["`python train.py`", *(f"`{o}`" for o in report.get("overrides", [])
                                                     if not o.startswith(("seed=", "paths.")))])
        for beta, result in report["final_eval"].items():
            lines.append(f"| {command} | {seed} | {report['batches_trained']} | {report['wall_s'] / 60:.1f} | "
                         f"{beta} | " + " | ".join(cells(result.get("metrics", {}))) + " |")
    lines.append("")
    lines += [f"* {report['note']}" for report in reports if report.get("note")]
    return lines + [""]


def checks_section() -> list[str]:
    """``*_equivalence.json`` and ``*_throughput.json``: what a restructuring was checked against."""
    paths = sorted(RESULTS.glob("*_equivalence.json")) + sorted(RESULTS.glob("*_throughput.json"))
    if not paths:
        return []
    lines = ["## Restructurings checked", "",
             "Changes of the code's structure, each checked to change no number of the default run and not "
             "to slow it down.", "", "| file | what | result | machine |", "|---|---|---|---|"]
    for path in paths:
        report = json.loads(path.read_text())
        lines.append(f"| `{path.name}` | {report.get('what', '')} | {report.get('result', '')} | {machine(report)} |")
    return lines + [""]


def whole_runs_section(paths: list[Path]) -> list[str]:
    """Whole default runs with one change, each scored as the default run is. Older reports keep
    the scores under ``metrics`` or ``batches_<N>`` instead of ``final_eval``."""
    rows = []
    for path in paths:
        report = json.loads(path.read_text())
        at_batches = next(((k.removeprefix("batches_"), v) for k, v in report.items()
                           if k.startswith("batches_") and isinstance(v, dict)), ("-", {}))
        values = scores(report) or report.get("metrics") or at_batches[1]
        batches = report.get("batches_trained") or at_batches[0]
        rows.append((path.name, batches, report.get("wall_s"), values, report.get("note") or report.get("what", "")))
    if not rows:
        return []
    lines = ["## Whole default runs with one change", "",
             "Each a whole `python train.py` run (2 threads) with the change named below, scored as the default run is; "
             "the code of the time, so compare each with the default run of its note, not with the current one.", "",
             "| report | batches | minutes | " + " | ".join(t for _, t in COLUMNS) + " |",
             "|---|---|---|" + "---|" * len(COLUMNS)]
    for name, batches, wall, values, _ in rows:
        minutes = f"{wall / 60:.1f}" if isinstance(wall, (int, float)) else "-"
        lines.append(f"| `{name}` | {batches} | {minutes} | " + " | ".join(cells(values)) + " |")
    lines.append("")
    lines += [f"- `{name}`: {note}" for name, _, _, _, note in rows]
    return lines + [""]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results.md")
    args = parser.parse_args(argv)
    lines = ["# Results", "",
             "Generated by `python benchmarks/results_page.py` from `benchmarks/results/gen*.json`, "
             "`pairs_default.json`, `emoji64*.json`, `ema_horizons_*.json`, `default_run_*.json`, `*_equivalence.json` and "
             "`*_throughput.json`; do not edit by "
             "hand. What the numbers mean: [docs/shapes.md](shapes.md) and each run's `metrics.json` protocol.", ""]
    default = RESULTS / "gen_default.json"
    if default.is_file():
        lines += default_section(json.loads(default.read_text()))
    for minutes, arms in budget_runs("gen").items():
        lines += budget_section(minutes, arms)
    pairs = RESULTS / "pairs_default.json"
    if pairs.is_file():
        lines += pairs_section(json.loads(pairs.read_text()))
    for minutes, arms in budget_runs("pairs").items():
        lines += budget_section(minutes, arms, PAIRS_COLUMNS, "Two objects, equal budget", "positive: GAN-GA higher")
    emoji = RESULTS / "emoji64_default.json"
    if emoji.is_file():
        lines += emoji_default_section(json.loads(emoji.read_text()))
    for minutes, arms in budget_runs("emoji64_").items():
        lines += emoji_budget_section(minutes, arms)
    lines += ema_section(sorted(RESULTS.glob("ema_horizons_*.json")))
    lines += whole_runs_section(sorted(RESULTS.glob("default_run_*.json")))
    lines += checks_section()
    args.out.write_text("\n".join(lines).rstrip() + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
