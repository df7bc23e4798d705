"""Which shapes a trained discriminator tells apart (one-object shapes runs; JSON).

Every val image (one object, every attribute named) is judged with its own caption and with the
caption of the same scene with the shape word replaced by each other shape's. Reported per pair
(true shape, shape named instead): how often D's whole logit prefers the true caption, on real
images and on the EMA generator's images of the same captions. 0.5 is chance; below 0.5, D would
rather call the object by the other name, so it teaches the generator nothing about that pair.
``benchmarks/d_reads_words.py`` gives the same per attribute. Also reported, for the pair D
confuses most (circle and hexagon): per true shape, the mean logit of the caption naming a circle
minus that of the caption naming a hexagon on real images, and the word matcher's share of it.

Usage: ``python benchmarks/d_reads_shapes.py CHECKPOINT [--samples N] [--out FILE]``
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import report as report_json  # noqa: E402 - benchmarks/report.py


@torch.no_grad()
def main() -> None:
    from datamodules.shapes import SHAPES, ShapesDataset, caption
    from lightning_modules.loading import load_module

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--samples", type=int, default=600)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    module = load_module(args.checkpoint).eval()
    d = module.discriminator
    data = ShapesDataset(split="val", length=args.samples, image_size=module.generator.image_size, max_objects=1,
                         open_probability=0.0)
    wins = {kind: np.zeros((len(SHAPES), len(SHAPES))) for kind in ("real", "generated")}
    counts = np.zeros((len(SHAPES), len(SHAPES)))
    truth, logit_gap, matcher_gap = [], [], []  # per image: its shape; "circle" minus "hexagon" on the real image
    for start in range(0, args.samples, 100):
        index = range(start, min(start + 100, args.samples))
        scenes = [data.sample(i) for i in index]
        captions = [text for _, text in scenes]
        shapes = [SHAPES.index(scene.objects[0].shape) for scene, _ in scenes]
        text = module.encode(captions)
        z = torch.randn(len(captions), module.z_dim, generator=torch.Generator().manual_seed(start))
        images = {"real": torch.stack([data[i]["image"] for i in index]),
                  "generated": module.generate_ema(z, text).clamp(-1, 1)}
        features = {kind: d.features(x) for kind, x in images.items()}
        true = {kind: d.judge(f, text.pooled, text.tokens, text.mask)[0] for kind, f in features.items()}
        naming = {}  # the real images' (logit, matcher share) with the caption naming each shape
        for other, name in enumerate(SHAPES):
            named = module.encode([caption(replace(scene, objects=(replace(scene.objects[0], shape=name),)),
                                           np.random.default_rng([start + j, other]))
                                   for j, (scene, _) in enumerate(scenes)])
            judged = {kind: d.judge(f, named.pooled, named.tokens, named.mask) for kind, f in features.items()}
            real_logits, _, sim = judged["real"]
            naming[name] = (real_logits,
                            d.match_gain * sim.diagonal() if sim is not None else torch.zeros_like(real_logits))
            for j, s in enumerate(shapes):
                if s != other:
                    counts[s, other] += 1
                    for kind, (named_logits, _, _) in judged.items():
                        wins[kind][s, other] += float(true[kind][j] > named_logits[j])
        truth += shapes
        logit_gap += (naming["circle"][0] - naming["hexagon"][0]).tolist()
        matcher_gap += (naming["circle"][1] - naming["hexagon"][1]).tolist()
    table = {kind: {f"{SHAPES[s]} over {SHAPES[o]}": float(w[s, o] / counts[s, o])
                    for s in range(len(SHAPES)) for o in range(len(SHAPES)) if counts[s, o]}
             for kind, w in wins.items()}
    truth, logit_gap, matcher_gap = np.array(truth), np.array(logit_gap), np.array(matcher_gap)
    gap = {SHAPES[s]: {"logit": float(logit_gap[truth == s].mean()), "matcher_share": float(matcher_gap[truth == s].mean())}
           for s in range(len(SHAPES)) if (truth == s).any()}
    report = {"benchmark": "d_reads_shapes", "checkpoint": str(args.checkpoint), "samples": args.samples,
              "what": "fraction of val images of each shape for which D's logit prefers the true caption over the same "
                      "caption naming each other shape, on real images and the EMA generator's images",
              "machine": report_json.machine(), "prefers_true": table,
              "circle_minus_hexagon_on_real": gap}
    report_json.write(report, args.out)


if __name__ == "__main__":
    main()
