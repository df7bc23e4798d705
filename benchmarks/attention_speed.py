"""The generator's token cross-attention written out against ``F.scaled_dot_product_attention``.

``TokenCrossAttention`` (``lightning_modules/components/fusion.py``) computes its attention with
``masked_attention`` (scores, masked softmax, weighted sum). The reference is PyTorch's fused
``scaled_dot_product_attention``, which the layer called before. Both give the same values to bf16
rounding (``tests/test_networks.py``). One call measures, in this order:

* ``layer``: forward + backward of the attention alone on the default run's shapes (batch 32, 4
  heads of 32, the 8x8 and the 16x16 map against ``--tokens`` caption tokens, a padded tail masked),
  under the precision ``precision=auto`` trains in on this CPU; the two forms alternate,
  ``--repeats`` each, the figure the mean;
* ``step``: the whole training step of ``python train.py`` (``benchmarks/throughput.py``'s
  ``measure``), in fresh processes, reference then change, twice each, the mean over all timed
  batches of a form.

Usage: ``python benchmarks/attention_speed.py [--out FILE] [--batches N] [hydra overrides ...]``
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


def fused_attention(q, k, v, mask):
    """The reference: PyTorch's fused kernel."""
    import torch.nn.functional as F

    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def time_layer(repeats: int, tokens: int) -> dict:
    import torch

    from lightning_modules.components import fusion
    from lightning_modules.training import cpu_has_native_bf16

    dtype = torch.bfloat16 if cpu_has_native_bf16() else None  # what precision=auto trains in on this CPU
    g = torch.Generator().manual_seed(0)
    out = {"precision": "bf16-mixed" if dtype is not None else "32-true"}
    for side in (8, 16):
        q = torch.randn(32, 4, side * side, 32, generator=g, requires_grad=True)
        k, v = (torch.randn(32, 4, tokens, 32, generator=g, requires_grad=True) for _ in range(2))
        mask = torch.ones(32, 1, 1, tokens, dtype=torch.bool)
        mask[:, :, :, tokens * 3 // 4:] = False

        def call(fn):
            def run():
                with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                    result = fn(q, k, v, mask)
                result.float().sum().backward()
                q.grad = k.grad = v.grad = None
            return run

        forms = {"reference": fused_attention, "change": fusion.masked_attention}
        out[f"{side}x{side}"] = time_forms({name: call(fn) for name, fn in forms.items()}, repeats)
    return out


def child(out: Path, fused: bool, batches: int, warmup: int, overrides: list[str]) -> None:
    from lightning_modules.components import fusion

    if fused:  # TokenCrossAttention looks the function up at call time
        fusion.masked_attention = fused_attention
    with tempfile.TemporaryDirectory() as tmp:
        out.write_text(json.dumps(measure(overrides, batches, warmup, Path(tmp))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--batches", type=int, default=16, help="timed batches per process (a multiple of gp_every)")
    parser.add_argument("--warmup", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=30, help="timed attention calls per form and map")
    parser.add_argument("--tokens", type=int, default=16, help="caption tokens in the layer timing")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--fused", action="store_true", help=argparse.SUPPRESS)
    args, overrides = parser.parse_known_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child:
        child(args.child, args.fused, args.batches, args.warmup, overrides)
        return
    layer = time_layer(args.repeats, args.tokens)
    step = steps_side_by_side(overrides, args, __file__, "--fused")
    report = {
        "benchmark": "attention_speed",
        "what": "the generator's cross-attention written out (change) against F.scaled_dot_product_attention "
                "(reference): the attention alone (forward + backward) and the whole training step, mean over batches",
        "command": "python benchmarks/attention_speed.py " + " ".join(overrides),
        "machine": report_json.machine(),
        "layer": layer,
        "step": {k: v for k, v in step.items() if k != "runs"},
        "runs": step["runs"],
    }
    report_json.write(report, args.out)


if __name__ == "__main__":
    main()
