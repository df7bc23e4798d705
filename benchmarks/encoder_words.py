"""What the frozen text encoder offers for held-out phrasings of the shapes data (JSON).

Two readings of the encoder's features, with the words of ``datamodules/shapes.py``:

* synonyms: for each held-out shape word (``UNSEEN_SHAPE_WORDS``: disc, box, rhombus) the cosine
  between its token feature and its training word's ("circle"), against the cosine between the
  training word and each other shape word, all in one caption frame ("a large red {} on the left").
  A held-out word can only be followed if its feature is nearer its own shape than the others.
* templates: the centred cosine (features minus the mean over the captions compared) of one scene's
  pooled sentence vector in a training template and in each held-out template, against the same
  caption with the colour or the shape changed; and the cosine of the shape word's own token
  across those captions.

Also reported: the share of the test split's ``unseen_phrasing`` captions with a held-out shape word.

Usage: ``python benchmarks/encoder_words.py [encoder=minilm] [--out FILE]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import report as report_json  # noqa: E402 - benchmarks/report.py

FRAME = "a large red {} on the left"


def word_feature(encoder, caption: str, word: str) -> torch.Tensor:
    """The mean feature of the tokens that spell ``word`` in ``caption`` (one word may be several tokens)."""
    batch = encoder.tokenize([caption])
    text = encoder.encode_tokens(batch["input_ids"], batch["attention_mask"])
    ids = batch["input_ids"][0].tolist()
    target = encoder.tokenizer(word, add_special_tokens=False)["input_ids"]
    for start in range(len(ids) - len(target) + 1):
        if ids[start:start + len(target)] == target:
            return text.tokens[0, start:start + len(target)].float().mean(0)
    raise ValueError(f"{word!r} is not spelled as its own tokens in {caption!r}")


@torch.no_grad()
def main() -> None:
    from hydra import compose, initialize_config_dir

    from datamodules.shapes import SHAPES, TEMPLATES, UNSEEN_SHAPE_WORDS, UNSEEN_TEMPLATES, ShapesDataset
    from lightning_modules.loading import build

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="train.py config overrides, e.g. encoder=minilm")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=args.overrides)
    encoder = build(cfg.encoder).eval()
    cos = lambda a, b: float(F.cosine_similarity(a, b, dim=0))  # noqa: E731

    synonyms = {}
    for shape, words in UNSEEN_SHAPE_WORDS.items():
        own = word_feature(encoder, FRAME.format(shape), shape)
        others = {s: cos(own, word_feature(encoder, FRAME.format(s), s)) for s in SHAPES if s != shape}
        for word in words:
            synonyms[f"{word}->{shape}"] = {
                "to_its_shape": cos(own, word_feature(encoder, FRAME.format(word), word)),
                "other_shapes_to_it_max": max(others.values()),
                "other_shapes_to_it_mean": sum(others.values()) / len(others),
            }

    np_, where = "a large red circle", "on the left"
    captions = {"training template": TEMPLATES[0][0].format(np=np_, where=where)}
    captions.update({f"held-out template {k}": t[0].format(np=np_, where=where) for k, t in enumerate(UNSEEN_TEMPLATES)})
    captions["colour changed"] = TEMPLATES[0][0].format(np="a large blue circle", where=where)
    captions["shape changed"] = TEMPLATES[0][0].format(np="a large red square", where=where)
    pooled = encoder(list(captions.values())).pooled.float()
    centred = pooled - pooled.mean(0, keepdim=True)
    anchor = centred[0]
    circle = word_feature(encoder, captions["training template"], "circle")
    templates = {name: {"sentence_centred_cosine": cos(anchor, centred[i]),
                        **({"shape_token_cosine": cos(circle, word_feature(encoder, c, "circle"))} if "circle" in c else {})}
                 for i, (name, c) in enumerate(captions.items()) if i > 0}

    data = ShapesDataset(split="test", length=2048, max_objects=1)
    held_out_words = {w for words in UNSEEN_SHAPE_WORDS.values() for w in words}
    phrasing = [data.sample(i)[1] for i in range(len(data)) if data.subset_of(i) == "unseen_phrasing"]
    share = sum(bool(held_out_words & set(c.replace(",", " ").split())) for c in phrasing) / len(phrasing)
    report_json.write({
        "benchmark": "encoder_words",
        "what": "token cosine of each held-out shape word to its shape's training word against the other shapes'; "
                "centred cosine of one scene's sentence vector across templates against a colour or shape change",
        "encoder": str(cfg.encoder.pretrained),
        "frame": FRAME,
        "captions": captions,
        "synonyms": synonyms,
        "templates": templates,
        "unseen_phrasing_share_with_held_out_shape_word": share,
        "unseen_phrasing_captions": len(phrasing),
        "machine": report_json.machine(),
    }, args.out)


if __name__ == "__main__":
    main()
