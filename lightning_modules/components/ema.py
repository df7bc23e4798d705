"""Exponential moving average of the generator's weights (used for every sample and metric)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_ema(model: nn.Module) -> nn.Module:
    ema = copy.deepcopy(model).eval()
    return ema.requires_grad_(False)


def ema_beta(batches: int, beta: float, warmup: bool = True) -> float:
    """With warm-up the average starts short and lengthens: ``min(beta, (1 + n) / (10 + n))``."""
    return min(beta, (1 + batches) / (10 + batches)) if warmup else beta


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """``ema += (1 - beta) * (model - ema)`` in the EMA's own dtype (float32 even when the model
    trains in bf16 / fp16: a 1e-3 step rounds away in 16-bit), one fused op over all tensors."""
    averaged = list(ema.parameters())
    current = [p.detach() for p in model.parameters()]
    if len(averaged) != len(current):
        raise ValueError(f"EMA has {len(averaged)} parameters, the model {len(current)}")
    current = [p if p.dtype == e.dtype else p.to(e.dtype) for e, p in zip(averaged, current)]
    if averaged:
        torch._foreach_lerp_(averaged, current, 1.0 - beta)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)
