"""How a run's samples of open captions collapse, checkpoint by checkpoint (JSON).

``diversity/open_tv`` says that the samples of a caption which leaves attributes open vary less
than the data; this reads *how*: for the open prompts of ``diversity/open_tv`` (the first seen
one-object captions of the split that leave something open), 64 samples each, the shapes oracle's
histogram of every open attribute, for the raw generator and for its EMA, at each checkpoint of a
run. A generator that collapses onto one value (``top_share`` near 1) at every checkpoint, but onto
another value at the next, is mode hopping: no judge of one image can see it, since each image is a
right image of its caption.

Usage: ``python benchmarks/open_collapse.py RUN [--every 200] [--out FILE]`` (RUN: a run folder
whose ``checkpoints/`` hold periodic checkpoints, e.g. one of ``benchmarks/shapes_quality.py
--run-dir``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import report as report_json  # noqa: E402 - benchmarks/report.py

SAMPLES = 64


def histograms(model, oracle, prompts) -> list[dict]:
    """Per prompt and open attribute: the oracle-read histogram of 64 samples (noise seed 0)."""
    from datamodules import shapes
    from lightning_modules.metrics.caption_accuracy import ATTRIBUTE_VALUES, open_histogram
    from lightning_modules.metrics.shapes_oracle import read_scenes

    out = []
    for scene, text in prompts:
        pred = read_scenes(oracle, model.generate([text], num=SAMPLES, seed=0, output="tensor"))
        for attribute in (a for a in shapes.ATTRIBUTES if a not in scene.names(0)):
            values = ATTRIBUTE_VALUES[attribute]
            hist = open_histogram(pred, range(SAMPLES), attribute)
            reference = np.append(shapes.open_distribution(scene, attribute), 0.0)
            top = int(hist.argmax())
            out.append({"prompt": text, "attribute": attribute,
                        "top": "none" if top == len(values) else values[top],
                        "top_share": float(hist[top]), "tv": 0.5 * float(np.abs(hist - reference).sum()),
                        "histogram": [round(float(x), 4) for x in hist]})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--every", type=int, default=200, help="read the checkpoints every this many batches")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import lightning_modules
    from datamodules import shapes
    from lightning_modules.metrics.caption_accuracy import diversity_prompts
    from lightning_modules.metrics.shapes_oracle import load_or_train

    ckpts = sorted((report_json.batches_seen(p), p) for p in (args.run / "checkpoints").glob("*.ckpt")
                   if "-step" in p.name)
    if not ckpts:
        sys.exit(f"{args.run}/checkpoints: no periodic checkpoints (epochNNN-stepNNNNNNN.ckpt) to read")
    oracle = load_or_train(ROOT / "data" / "cache").eval()  # paths.cache_dir's default (the shipped oracle if current)
    points, prompts = [], None
    for batches, ckpt in ckpts:
        if batches % args.every and ckpt != ckpts[-1][1]:
            continue
        model = lightning_modules.load(ckpt, device="cpu")
        if prompts is None:
            data = model.module.run_config["data"]
            probe = shapes.ShapesDataset(split=args.split, length=1, seed=int(data["seed"]), min_objects=1,
                                         max_objects=1, open_probability=float(data["open_probability"]))
            prompts = diversity_prompts(probe)["open"]
        for which in ("ema", "raw"):
            if which == "raw":  # the generator as trained, not its average
                model.module.generator_ema.load_state_dict(model.module.generator.state_dict())
            rows = histograms(model, oracle, prompts)
            points.append({"batches": batches, "generator": which, "mean_tv": float(np.mean([r["tv"] for r in rows])),
                           "mean_top_share": float(np.mean([r["top_share"] for r in rows])), "rows": rows})
            print(f"batch {batches:5d} {which}: mean tv {points[-1]['mean_tv']:.3f}, mean top share "
                  f"{points[-1]['mean_top_share']:.2f}; " + "; ".join(
                      f"{r['prompt'][:24]}/{r['attribute']}: {r['top']} {r['top_share']:.2f}" for r in rows[:3]))
    report_json.write({"benchmark": "open_collapse", "run": str(args.run), "split": args.split,
                       "samples_per_prompt": SAMPLES, "machine": report_json.machine(), "points": points}, args.out)


if __name__ == "__main__":
    main()
