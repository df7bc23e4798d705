"""Which words a trained discriminator reads (shapes runs; JSON).

For each attribute (shape, colour, size, position), every val image is judged with its own caption
and with the caption of the same scene with that attribute changed (one word or phrase). Reported:
how often D's word matcher (``similarity``), and D's whole logit, prefer the true caption on real
images and on the EMA generator's images of the same captions. 0.5 is chance: D does not read that
attribute, so it cannot teach the generator to follow it.

Usage: ``python benchmarks/d_reads_words.py CHECKPOINT [--samples N] [--out FILE]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import report as report_json  # noqa: E402 - benchmarks/report.py


def changed(scene, attribute: str, rng: np.random.Generator):
    """The scene with ``attribute`` of its first object changed (the caption names it)."""
    from datamodules.shapes import ATTRIBUTES, counterfactual

    weights = [float(a == attribute) for a in ATTRIBUTES]
    return counterfactual(scene, rng, weights, training_only=False)


@torch.no_grad()
def main() -> None:
    from datamodules.shapes import ATTRIBUTES, ShapesDataset, caption
    from lightning_modules.loading import load_module

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    module = load_module(args.checkpoint).eval()
    d = module.discriminator
    if d.matcher is None:
        sys.exit("this checkpoint's discriminator has no word matcher (model.discriminator.word_matching=false)")
    data = ShapesDataset(split="val", length=args.samples, image_size=module.generator.image_size, max_objects=1)
    items = [data[i] for i in range(args.samples)]
    images = torch.stack([it["image"] for it in items])
    captions = [it["caption"] for it in items]
    z = torch.randn(args.samples, module.z_dim, generator=torch.Generator().manual_seed(0))
    fakes = module.generate_ema(z, module.encode(captions)).clamp(-1, 1)
    n = args.samples
    out: dict[str, dict[str, float]] = {}
    for k, attribute in enumerate(ATTRIBUTES):
        keep = [i for i in range(n) if attribute in data.sample(i)[0].names(0)]  # captions that name it
        m = len(keep)
        negatives = [caption(changed(data.sample(i)[0], attribute, np.random.default_rng([7, i, k])),
                             np.random.default_rng([8, i, k])) for i in keep]
        text = module.encode([captions[i] for i in keep] + negatives)
        pairs, rows = torch.arange(m, 2 * m), torch.arange(m)
        row = {"samples": m}
        for name, x in (("real", images[keep]), ("generated", fakes[keep])):
            logits, wrong, sim = d.judge(d.features(x), text.pooled, text.tokens, text.mask, pairs)
            row[f"matcher_{name}"] = float((sim[rows, rows] > sim[rows, pairs]).float().mean())
            row[f"logit_{name}"] = float((logits > wrong).float().mean())
        out[attribute] = row
    report = {"benchmark": "d_reads_words", "checkpoint": str(args.checkpoint), "samples": n,
              "what": "fraction of val images whose caption names the attribute for which D prefers the true caption "
                      "over the caption with that attribute changed",
              "machine": report_json.machine(), "attributes": out}
    report_json.write(report, args.out)


if __name__ == "__main__":
    main()
