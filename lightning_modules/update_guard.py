"""The update guard: one optimizer update, measured, clipped, and skipped when it is not finite.

``norm, ok = guard.step(optimizer, loss)`` zeroes the optimizer's gradients, back-propagates
``loss`` and steps the optimizer unless the loss or the gradient is not finite. It returns the
gradient's norm (before clipping, unscaled) and whether the update was taken, both device
tensors: where the optimizer can skip a step by itself, nothing is read on the host.

Where the check runs. Under a Lightning trainer ``optimizer.step()`` goes through the precision
plugin, which (16-mixed, an optimizer that does not unscale in its own step) unscales the
gradients and then calls the module's ``on_before_optimizer_step``; that hook calls
:meth:`UpdateGuard.check`, so the norm, the decision and the clipping see true gradients. Without
a trainer (a module used on its own) ``step`` back-propagates, checks and steps by itself.

``check``, in order:
  1. ``ddp_gan`` (a strategy with ``averages_gradients_in_module``): the gradients are averaged
     over the ranks (no DDP wrapper did it);
  2. the gradient's norm, divided by the GradScaler's scale when the optimizer unscales in its
     own step (fused Adam: its gradients are still scaled here);
  3. ``ok``: loss and norm finite; with several ranks the minimum over the ranks (a collective, no
     host read), so every rank takes or skips the update alike;
  4. clipping by norm to ``clip_val`` (``torch.nn.utils.clip_grads_with_norm_``);
  5. the skip of a rejected update, the way the optimizer allows:

     - an optimizer whose step reads a skip flag on the device (fused Adam, AdamW, SGD, Adagrad),
       no GradScaler: the flag is set to ``not ok``; no host read;
     - the same under a GradScaler: the scaler's ``step`` sets that flag itself from the
       gradients, so a rejected update gets a NaN in one gradient: the scaler skips the step and
       lowers its scale; no host read;
     - any other optimizer: one host read of ``ok``, and a rejected update's gradients are
       dropped (an optimizer passes over a parameter without one). On a CPU the read is free.
       Under a GradScaler the scaler's ``step`` reads its own verdict on the host anyway, and
       that verdict was taken at ``unscale_``, before this check saw the loss and the other
       ranks: the dropped gradients are what skips there.

An uncounted step (``counted=False``: the lazy penalty, the VAE phase) runs through
``trainer.strategy.optimizer_step``, the path of ``LightningOptimizer.step`` (precision plugin,
hooks) without advancing Lightning's ``global_step``.

The private torch APIs the guard needs are the functions of the last section, one each, each
pinned by a test in ``tests/test_update_guard.py``.
"""

from __future__ import annotations

from typing import Any

import torch

from lightning_modules.strategies import average_gradients


class UpdateGuard:
    """Backward, check, clip and step for the optimizers of ``module`` (a LightningModule, or any
    module used without a trainer). ``clip_val`` > 0 clips the gradient's norm to it."""

    def __init__(self, module: Any, clip_val: float = 0.0):
        self.module, self.clip_val = module, clip_val
        self._loss: torch.Tensor | None = None  # the update being taken, between backward and step
        self._result: tuple[torch.Tensor, torch.Tensor] | None = None
        self._flag_set = False

    def step(self, optimizer, loss: torch.Tensor, counted: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Backward and step; returns (gradient norm, update taken), device tensors. An uncounted
        step leaves Lightning's ``global_step`` alone."""
        trainer = self._trainer()
        optimizer.zero_grad(set_to_none=True)
        if trainer is None:
            loss.backward()
        else:
            self.module.manual_backward(loss)
        self._loss, self._result = loss.detach(), None
        raw = _raw(optimizer)
        try:
            if trainer is None:
                self.check(raw)
                optimizer.step()
            elif counted:
                optimizer.step()  # the precision plugin calls the module's hook, which calls check
            else:
                trainer.strategy.optimizer_step(raw, closure=lambda: None, model=self.module)
        finally:
            self._loss = None
            if self._flag_set:
                _set_skip_flag(raw, None)
                self._flag_set = False
        if self._result is None:
            raise RuntimeError("the update guard's check did not run in the optimizer step: the module's "
                               "on_before_optimizer_step must call guard.check(optimizer)")
        return self._result

    def check(self, optimizer) -> None:
        """Measures, decides, clips and arranges the skip (see the module docstring); called from the
        module's ``on_before_optimizer_step``. A step not taken through :meth:`step` is left alone."""
        if self._loss is None:
            return
        raw, trainer = _raw(optimizer), self._trainer()
        params = [p for group in raw.param_groups for p in group["params"] if p.grad is not None]
        if trainer is not None and getattr(trainer.strategy, "averages_gradients_in_module", False):
            average_gradients(params, trainer.world_size)
        scaler, flagged = self._scaler(trainer), _skips_on_flag(raw)
        norm = (torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True) if params
                else torch.zeros((), device=self._loss.device))
        if scaler is not None and flagged:  # it unscales in its step: the gradients are still scaled
            norm = norm / _scale_on_device(scaler).to(norm.device)
        ok = torch.isfinite(self._loss).all() & torch.isfinite(norm)
        if trainer is not None and trainer.world_size > 1:
            flag = ok.to(torch.int32)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
            ok = flag.bool()
        self._result = (norm.detach(), ok)
        if self.clip_val > 0 and params:
            torch.nn.utils.clip_grads_with_norm_(params, self.clip_val, norm)
        if flagged and scaler is not None:  # the scaler's step checks the gradients: one NaN skips it
            if params:
                params[0].grad.mul_(torch.where(ok, 1.0, float("nan")))
        elif flagged:
            _set_skip_flag(raw, ~ok)
            self._flag_set = True
        elif not bool(ok):
            for p in params:
                p.grad = None

    def _trainer(self):
        return getattr(self.module, "_trainer", None)

    @staticmethod
    def _scaler(trainer) -> torch.amp.GradScaler | None:
        """The 16-mixed precision plugin's GradScaler, when it scales."""
        scaler = None if trainer is None else getattr(trainer.precision_plugin, "scaler", None)
        return scaler if scaler is not None and scaler.is_enabled() else None


def count_skips(skipped_d: torch.Tensor, skipped_g: torch.Tensor, bad_streak: torch.Tensor, d_ok: torch.Tensor,
                g_ok: torch.Tensor) -> None:
    """A batch's skipped updates, added in place on the device: one to ``skipped_d`` / ``skipped_g``
    when the D / G phase skipped one; ``bad_streak`` counts the batches in a row with a skip."""
    skipped_d += (~d_ok).long()
    skipped_g += (~g_ok).long()
    bad_streak.copy_((bad_streak + 1) * (~(d_ok & g_ok)).long())


def _raw(optimizer):
    """The torch optimizer inside a ``LightningOptimizer`` (or the optimizer itself)."""
    return getattr(optimizer, "optimizer", optimizer)


# ---------------------------------------------------------------------- torch internals
# One function per private API of torch; tests/test_update_guard.py pins the behaviour of each in
# the installed torch.

def _skips_on_flag(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimizer's step reads ``found_inf`` / ``grad_scale`` on the device (fused
    Adam, AdamW, SGD, Adagrad): it skips itself when ``found_inf`` is 1, and a GradScaler leaves
    the unscaling to it (Lightning's MixedPrecision then does not call ``unscale_``)."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False))


def _set_skip_flag(optimizer: torch.optim.Optimizer, bad: torch.Tensor | None) -> None:
    """The next step of such an optimizer changes nothing (weights, moments, step count) where
    ``bad`` is true, read on the device; None takes the flag away after the step."""
    if bad is not None:
        optimizer.found_inf = bad.float()
    elif getattr(optimizer, "found_inf", None) is not None:
        del optimizer.found_inf


def _scale_on_device(scaler: torch.amp.GradScaler) -> torch.Tensor:
    """The GradScaler's current scale as a device tensor (``get_scale()`` reads it on the host)."""
    return scaler._get_scale_async()
