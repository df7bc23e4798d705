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
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1.0 - beta)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)
