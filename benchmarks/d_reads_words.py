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
    """The scene with ``attribute`` of its first object changed."""
    from datamodules.shapes import counterfactual

    for _ in range(1000):
        other = counterfactual(scene, rng)
        if getattr(other.objects[0], attribute) != getattr(scene.objects[0], attribute):
            return other
    raise RuntimeError(f"no counterfactual changes {attribute}")


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
        negatives = [caption(changed(data.sample(i)[0], attribute, np.random.default_rng([7, i, k])),
                             np.random.default_rng([8, i, k])) for i in range(n)]
        text = module.encode(captions + negatives)
        pairs = torch.arange(n, 2 * n)
        row = {}
        for name, x in (("real", images), ("generated", fakes)):
            logits, wrong, sim = d.judge(d.features(x), text.pooled, text.tokens, text.mask, pairs)
            row[f"matcher_{name}"] = float((sim[torch.arange(n), torch.arange(n)] > sim[torch.arange(n), pairs]).float().mean())
            row[f"logit_{name}"] = float((logits > wrong).float().mean())
        out[attribute] = row
    report = {"benchmark": "d_reads_words", "checkpoint": str(args.checkpoint), "samples": n,
              "what": "fraction of val images for which D prefers the true caption over a one-attribute counterfactual",
              "machine": report_json.machine(), "attributes": out}
    report_json.write(report, args.out)


if __name__ == "__main__":
    main()
