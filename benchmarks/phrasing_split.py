"""Where held-out phrasings lose shape (one-object shapes runs; JSON).

Test scenes of the ``unseen_phrasing`` subset whose caption names the shape and the cell: the
generator draws each once from its caption as phrased (a held-out template, and half the time a
held-out word: disc, box, rhombus for the shape) and once from a caption of the same scene in a
training template with training words. The oracle reads the shape at the named cell. Reported
per group: captions with a held-out shape word, and per held-out template without one. The gap
between the two readings is what the phrasing costs; the training-template reading is the
generator's shape accuracy on those scenes.

Usage: ``python benchmarks/phrasing_split.py CHECKPOINT [--scenes N] [--out FILE]``
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


@torch.no_grad()
def main() -> None:
    import lightning_modules
    from datamodules import shapes
    from lightning_modules.metrics.shapes_oracle import load_or_train, read_scenes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--scenes", type=int, default=600)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    model = lightning_modules.load(args.checkpoint, device="cpu")
    data = model.module.run_config["data"]
    test = shapes.ShapesDataset(split="test", length=20 * args.scenes, seed=int(data["seed"]), max_objects=1,
                                open_probability=float(data["open_probability"]))
    rows = []  # (scene, caption as phrased, the same scene in a training template)
    for i in range(len(test)):
        scene, text = test.sample(i)
        if scene.subset == "unseen_phrasing" and {"shape", "position"} <= scene.names(0):
            rows.append((scene, text, shapes.describe(scene.objects[0], scene.names(0), np.random.default_rng([9, i]))))
        if len(rows) == args.scenes:
            break
    oracle = load_or_train(ROOT / "data" / "cache").eval()  # paths.cache_dir's default (the shipped oracle if current)

    def right(captions: list[str]) -> np.ndarray:
        found = read_scenes(oracle, model.generate(captions, num=1, seed=0, output="tensor"))
        out = []
        for k, (scene, _, _) in enumerate(rows):
            shape, _, _, cell = scene.objects[0].as_indices()
            out.append(bool(found["present"][k, cell]) and int(found["shape"][k, cell]) == shape)
        return np.array(out)

    phrased, training = right([r[1] for r in rows]), right([r[2] for r in rows])
    held_out_words = {w for words in shapes.UNSEEN_SHAPE_WORDS.values() for w in words}
    synonym = np.array([bool(held_out_words & set(r[1].split())) for r in rows])
    groups = {"all": np.ones(len(rows), bool), "held-out shape word": synonym}
    for with_place, _ in shapes.UNSEEN_TEMPLATES:  # each held-out template, without a held-out shape word
        marker = with_place.replace("{where}", "").replace("{np}", "").strip()
        groups[f"template '{with_place}', training shape word"] = ~synonym & np.array([marker in r[1] for r in rows])
    table = {name: {"captions": int(mask.sum()), "shape_as_phrased": float(phrased[mask].mean()),
                    "shape_in_training_template": float(training[mask].mean())} for name, mask in groups.items()}
    report = {"benchmark": "phrasing_split", "checkpoint": str(args.checkpoint), "scenes": len(rows),
              "what": "oracle-read shape at the named cell, one sample (seed 0) per unseen_phrasing test scene that "
                      "names shape and cell: from its caption as phrased, and from the same scene in a training "
                      "template with training words",
              "machine": report_json.machine(), "groups": table}
    report_json.write(report, args.out)


if __name__ == "__main__":
    main()
