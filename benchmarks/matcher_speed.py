"""The word matcher's similarity with and without the attended context built, side by side.

``attended_cosine`` (``lightning_modules/components/discriminators.py``) scores every word of every
caption against every image without building the attended context (``[images, captions, words,
dim]``). The reference here is the direct form: ``context = attention @ regions``, then the cosine.
Both compute the same values (``tests/test_alignment.py``). One call measures, in this order:

* ``matcher``: forward + backward of the similarity alone on D's default shapes (32 images, 64
  captions = the batch and its counterfactual negatives, 16 regions, ``--words`` tokens, 128 dims),
  under the default precision of this machine; the two forms alternate, ``--repeats`` each, and
  the figure is the mean.
* ``step``: the whole training step of ``python train.py`` (``benchmarks/throughput.py``'s
  ``measure``: D step, lazy MA-GP step, G step, EMA; text encoded outside the timed span), in fresh
  processes, reference then change, twice each (the order reference, change, reference, change), the
  figure the mean over all timed batches of a form.

Usage: ``python benchmarks/matcher_speed.py [--out FILE] [--batches N] [hydra overrides ...]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
import report as report_json  # noqa: E402 - benchmarks/report.py
from throughput import measure, steps_side_by_side, time_forms  # noqa: E402 - benchmarks/throughput.py


def explicit_attended_cosine(regions, words, inverse_temperature, eps: float = 1e-8):
    """The reference: build the attended context, then the cosine."""
    import torch
    import torch.nn.functional as F

    attn = (torch.einsum("jrd,ild->jilr", regions, words) * inverse_temperature).softmax(-1)
    context = torch.einsum("jilr,jrd->jild", attn, regions)
    return F.cosine_similarity(context, words.unsqueeze(0), dim=-1, eps=eps)


def time_matcher(repeats: int, words_per_caption: int) -> dict:
    import torch

    from lightning_modules.components import discriminators
    from lightning_modules.training import cpu_has_native_bf16

    dtype = torch.bfloat16 if cpu_has_native_bf16() else None  # what precision=auto trains in on this CPU
    precision = "bf16-mixed" if dtype is not None else "32-true"
    g = torch.Generator().manual_seed(0)
    regions = torch.randn(32, 16, 128, generator=g, requires_grad=True)
    words = torch.randn(64, words_per_caption, 128, generator=g, requires_grad=True)
    forms = {"reference": explicit_attended_cosine, "change": discriminators.attended_cosine}

    def call(fn):
        def run():
            with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                out = fn(regions, words, 128**-0.5 * 4.0)
            out.float().sum().backward()
            regions.grad = words.grad = None
        return run

    timed = time_forms({name: call(fn) for name, fn in forms.items()}, repeats)
    return {"precision": precision, "shapes": {"regions": list(regions.shape), "words": list(words.shape)}, **timed}


def child(out: Path, explicit: bool, batches: int, warmup: int, overrides: list[str]) -> None:
    from lightning_modules.components import discriminators

    if explicit:  # WordRegionMatcher.similarity looks the function up at call time
        discriminators.attended_cosine = explicit_attended_cosine
    with tempfile.TemporaryDirectory() as tmp:
        out.write_text(json.dumps(measure(overrides, batches, warmup, Path(tmp))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--batches", type=int, default=16, help="timed batches per process (a multiple of gp_every)")
    parser.add_argument("--warmup", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=30, help="timed matcher calls per form")
    parser.add_argument("--words", type=int, default=12, help="tokens per caption in the matcher timing")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--explicit", action="store_true", help=argparse.SUPPRESS)
    args, overrides = parser.parse_known_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child:
        child(args.child, args.explicit, args.batches, args.warmup, overrides)
        return
    matcher = time_matcher(args.repeats, args.words)
    step = steps_side_by_side(overrides, args, __file__, "--explicit")
    report = {
        "benchmark": "matcher_speed",
        "what": "word matcher similarity without the attended context (change) against building it (reference): "
                "the similarity alone (forward + backward) and the whole training step, mean over batches",
        "command": "python benchmarks/matcher_speed.py " + " ".join(overrides),
        "machine": report_json.machine(),
        "matcher": matcher,
        "step": {k: v for k, v in step.items() if k != "runs"},
        "runs": step["runs"],
    }
    report_json.write(report, args.out)


if __name__ == "__main__":
    main()
