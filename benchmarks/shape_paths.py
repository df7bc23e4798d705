"""Which text path carries shape in a one-object shapes generator, and which shapes it confuses (JSON).

**Paths.** The generator reads a caption twice: its sentence vector (the affine modulations and the
4x4 seed) and its token features (the cross-attention). For each shape that has a held-out word
(circle/disc, square/box, diamond/rhombus) and each caption frame, every training colour of the
shape is drawn with 16 noises from four inputs: the caption with the training word, with the
held-out word, the held-out word's tokens with the training word's sentence vector, and the
training word's tokens with the held-out word's sentence vector. The oracle reads the shape of the
most confident object. When the swaps follow the sentence vector, that is where G reads shape.

**Confusions.** Every shape, size and colour in "a {size} {colour} {shape} on the left" (training
colours and, apart, each shape's two held-out colours), 16 noises each: the counts of the shapes
the oracle reads.

Usage: ``python benchmarks/shape_paths.py CHECKPOINT [--out FILE]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import report as report_json  # noqa: E402 - benchmarks/report.py

FRAMES = ("a large {color} {word} on the left", "a small {color} {word} in the center", "there is a large {color} {word}")
NOISES = 16


@torch.no_grad()
def main() -> None:
    import lightning_modules
    from datamodules import shapes
    from lightning_modules.components.text_encoders import TextFeatures
    from lightning_modules.metrics.shapes_oracle import load_or_train, read_scenes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    module = lightning_modules.load(args.checkpoint, device="cpu").module
    oracle = load_or_train(ROOT / "data" / "cache").eval()  # paths.cache_dir's default (the shipped oracle if current)
    z = torch.randn(NOISES, module.z_dim, generator=torch.Generator().manual_seed(0))

    def read_shapes(text: TextFeatures) -> torch.Tensor:
        """The shape index of the most confident object of each image, prompt-major."""
        found = read_scenes(oracle, module.sample_features(text, z))
        return found["shape"].gather(1, found["confidence"].argmax(-1, keepdim=True))[:, 0]

    def colours(shape: str, held_out: bool = False) -> list[str]:
        return [c for c in shapes.COLOR_NAMES if (c in shapes.HELD_OUT_COLORS[shape]) == held_out]

    paths = {}
    for frame in FRAMES:
        for shape, (word,) in shapes.UNSEEN_SHAPE_WORDS.items():
            names = colours(shape)
            trained = module.encode([frame.format(color=c, word=shape) for c in names])
            held = module.encode([frame.format(color=c, word=word) for c in names])
            length = max(trained.tokens.shape[1], held.tokens.shape[1])
            trained, held = trained.padded(length), held.padded(length)
            right = lambda text: float((read_shapes(text) == shapes.SHAPES.index(shape)).float().mean())  # noqa: E731
            paths[f"{frame.format(color='{color}', word=shape)} / {word}"] = {
                "training_word": right(trained), "held_out_word": right(held),
                "held_out_tokens_training_sentence": right(TextFeatures(held.tokens, held.mask, trained.pooled)),
                "training_tokens_held_out_sentence": right(TextFeatures(trained.tokens, trained.mask, held.pooled)),
            }

    confusions = {}
    for held_out in (False, True):
        table = {}
        for size in shapes.SIZES:
            for shape in shapes.SHAPES:
                read = read_shapes(module.encode([f"a {size} {c} {shape} on the left" for c in colours(shape, held_out)]))
                counts = torch.bincount(read, minlength=len(shapes.SHAPES)).tolist()
                table[f"{size} {shape}"] = dict(zip(shapes.SHAPES, counts))
        confusions["held_out_colours" if held_out else "training_colours"] = table

    report = {"benchmark": "shape_paths", "checkpoint": str(args.checkpoint), "noises": NOISES,
              "what": "oracle-read shape of G's images: captions with a training or a held-out shape word, and with "
                      "the token features and the sentence vector taken from the two captions crosswise; and the "
                      "shapes read for each named shape and size",
              "machine": report_json.machine(), "paths": paths, "confusions": confusions}
    report_json.write(report, args.out)


if __name__ == "__main__":
    main()
