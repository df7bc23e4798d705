"""The update guard (``lightning_modules/update_guard.py``): a non-finite loss or gradient skips the
update in every path (for-loop, foreach and fused Adam; a 16-mixed GradScaler with either; counted
and uncounted steps; no trainer; two ranks), the returned norm is the gradient's, clipping bounds
it, skips are counted, and each private torch API the guard reads behaves as the guard expects in
the installed torch."""

from __future__ import annotations

import json
import re
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import nn
from torch.utils.data import DataLoader

from lightning_modules.update_guard import (
    UpdateGuard,
    _scale_on_device,
    _set_skip_flag,
    _skips_on_flag,
    count_skips,
)

ROOT = Path(__file__).resolve().parents[1]
OPTIMIZERS = {"for-loop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}


def toy_loss(net: nn.Module, x: torch.Tensor, bad: str | None = None) -> torch.Tensor:
    """A finite loss of ``net`` on ``x``; ``bad="loss"``: the loss is inf, its gradient finite;
    ``bad="grad"``: the gradient is NaN, the loss finite."""
    y = net(x)
    if bad == "grad":
        y.register_hook(lambda g: torch.full_like(g, float("nan")))
    loss = y.float().square().mean()
    return loss + float("inf") if bad == "loss" else loss


def weights(net: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def changed(before: list[torch.Tensor], net: nn.Module) -> bool:
    return any(not torch.equal(b, p) for b, p in zip(before, net.parameters()))


def adam_steps(optimizer: torch.optim.Optimizer) -> int:
    return int(next(iter(optimizer.state.values()))["step"])


# ---------------------------------------------------------------------- without a trainer
@pytest.mark.parametrize("bad", ["loss", "grad"])
@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_a_non_finite_update_is_skipped_without_a_trainer(kind, bad):
    torch.manual_seed(0)
    net = nn.Linear(4, 1)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2, **OPTIMIZERS[kind])
    guard = UpdateGuard(net)
    taken = []
    for b in (None, bad, None):
        before = weights(net)
        norm, ok = guard.step(optimizer, toy_loss(net, torch.randn(8, 4), b))
        assert changed(before, net) == bool(ok)
        assert torch.isfinite(norm) == (b != "grad")
        taken.append(bool(ok))
    assert taken == [True, False, True]
    assert adam_steps(optimizer) == 2  # the skipped update left the step count (and the moments) alone
    assert all(torch.isfinite(p).all() for p in net.parameters())
    assert not hasattr(optimizer, "found_inf")  # the flag lives for one step only


def test_the_norm_is_the_gradients_and_clipping_bounds_the_update():
    torch.manual_seed(0)
    net = nn.Linear(16, 4)
    x = torch.randn(8, 16) * 100
    reference = nn.Linear(16, 4)
    reference.load_state_dict(net.state_dict())
    toy_loss(reference, x).backward()
    unclipped = torch.nn.utils.clip_grad_norm_(reference.parameters(), max_norm=0.5)
    expected = [p - p.grad for p in reference.parameters()]  # SGD(lr=1) on the clipped gradient
    norm, ok = UpdateGuard(net, clip_val=0.5).step(torch.optim.SGD(net.parameters(), lr=1.0), toy_loss(net, x))
    assert bool(ok) and unclipped > 0.5
    assert torch.equal(norm, unclipped)  # the norm before clipping
    for p, e in zip(net.parameters(), expected):
        torch.testing.assert_close(p, e, rtol=0, atol=0)


def test_a_step_not_taken_through_the_guard_is_left_alone():
    net = nn.Linear(4, 1)
    toy_loss(net, torch.randn(2, 4), "grad").backward()
    optimizer = torch.optim.Adam(net.parameters(), fused=True)
    UpdateGuard(net, clip_val=1e-3).check(optimizer)
    assert all(p.grad is not None and p.grad.isnan().all() for p in net.parameters())
    assert not hasattr(optimizer, "found_inf")


def test_skips_are_counted_and_the_streak_restarts_after_a_clean_batch():
    skipped_d, skipped_g, streak = (torch.zeros((), dtype=torch.long) for _ in range(3))
    seen = []
    for d_ok, g_ok in ((True, True), (False, True), (True, False), (False, False), (True, True), (False, True)):
        count_skips(skipped_d, skipped_g, streak, torch.tensor(d_ok), torch.tensor(g_ok))
        seen.append((int(skipped_d), int(skipped_g), int(streak)))
    assert seen == [(0, 0, 0), (1, 0, 1), (1, 1, 2), (2, 2, 3), (2, 2, 0), (3, 2, 1)]


def test_private_torch_apis_are_read_only_in_the_guards_internals_section():
    names = ("_get_scale_async", "_step_supports_amp_scaling", "_foreach_mul_", "found_inf")
    guard_file = ROOT / "lightning_modules" / "update_guard.py"
    internals = guard_file.read_text().split("# ---------------------------------------------------------------------- "
                                            "torch internals", 1)
    assert len(internals) == 2
    outside = {str(path.relative_to(ROOT)): text for path in (ROOT / "lightning_modules").rglob("*.py")
               for text in [path.read_text() if path != guard_file else internals[0]]}
    hits = [(path, name) for path, text in outside.items() for name in names if re.search(re.escape(name), text)]
    assert hits == []


# ---------------------------------------------------------------------- the private APIs, pinned
def test_the_fused_optimizers_are_the_ones_lightning_leaves_scaled():
    """``_skips_on_flag`` is torch's mark of an optimizer that unscales and skips in its own step;
    Lightning's MixedPrecision reads the same mark to leave such an optimizer's gradients scaled."""
    from lightning.fabric.plugins.precision.amp import _optimizer_handles_unscaling

    params = [nn.Parameter(torch.zeros(2))]
    flagged = {"Adam fused": torch.optim.Adam(params, fused=True), "AdamW fused": torch.optim.AdamW(params, fused=True),
               "SGD fused": torch.optim.SGD(params, lr=0.1, fused=True)}
    plain = {"Adam": torch.optim.Adam(params), "Adam foreach": torch.optim.Adam(params, foreach=True),
             "SGD": torch.optim.SGD(params, lr=0.1)}
    assert {k: _skips_on_flag(o) for k, o in {**flagged, **plain}.items()} == {**dict.fromkeys(flagged, True),
                                                                                **dict.fromkeys(plain, False)}
    assert all(_optimizer_handles_unscaling(o) == _skips_on_flag(o) for o in {**flagged, **plain}.values())


def test_the_skip_flag_freezes_a_fused_step_and_a_clear_flag_changes_nothing():
    torch.manual_seed(0)
    nets = [nn.Linear(4, 2) for _ in range(3)]
    for net in nets[1:]:
        net.load_state_dict(nets[0].state_dict())
    optimizers = [torch.optim.Adam(net.parameters(), lr=1e-2, fused=True) for net in nets]
    x = torch.randn(8, 4)
    for step, flags in enumerate(((None, False, True), (None, False, False))):
        start = weights(nets[2])
        for net, optimizer, flag in zip(nets, optimizers, flags):
            optimizer.zero_grad()
            toy_loss(net, x).backward()
            if flag is not None:
                _set_skip_flag(optimizer, torch.tensor(flag))
            optimizer.step()
            _set_skip_flag(optimizer, None)
            assert not hasattr(optimizer, "found_inf")
        assert all(torch.equal(a, b) for a, b in zip(nets[0].parameters(), nets[1].parameters()))  # bit for bit
        if step == 0:  # the flagged step: weights, moments and step count as before it
            assert all(torch.equal(a, b) for a, b in zip(start, nets[2].parameters()))
            assert optimizers[2].state == {} or adam_steps(optimizers[2]) == 0
            assert all(t.abs().sum() == 0 for s in optimizers[2].state.values() for k, t in s.items() if k != "step")
    assert adam_steps(optimizers[0]) == adam_steps(optimizers[1]) == 2 and adam_steps(optimizers[2]) == 1


def test_the_scale_on_device_is_the_scalers_live_scale():
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1000)
    net = nn.Linear(4, 1)
    optimizer = torch.optim.Adam(net.parameters(), fused=True)
    scaler.scale(toy_loss(net, torch.randn(2, 4), "grad")).backward()
    scale = _scale_on_device(scaler)
    assert isinstance(scale, torch.Tensor) and scale.device == torch.device("cpu") and float(scale) == 2.0**10
    scaler.step(optimizer)
    scaler.update()
    assert float(_scale_on_device(scaler)) == scaler.get_scale() == 2.0**9


def test_a_grad_scaler_checks_a_fused_optimizers_gradients_at_step_and_others_at_unscale():
    """The two facts the guard's skip under 16-mixed rests on: for a fused optimizer (no
    ``unscale_`` before the hook) one NaN gradient put there makes ``scaler.step`` skip and lower
    the scale; for another optimizer the scaler's verdict was taken at ``unscale_``, so a NaN put
    afterwards is stepped into the weights (the guard drops that update's gradients instead)."""
    for fused in (True, False):
        torch.manual_seed(0)
        net = nn.Linear(4, 1)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2, fused=fused)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1000)
        scaler.scale(toy_loss(net, torch.randn(2, 4))).backward()
        if not fused:
            scaler.unscale_(optimizer)  # what Lightning's MixedPrecision does before the hook
        before = weights(net)
        next(net.parameters()).grad.mul_(float("nan"))
        scaler.step(optimizer)
        scaler.update()
        if fused:
            assert not changed(before, net) and scaler.get_scale() == 2.0**9
        else:
            assert any(p.isnan().any() for p in net.parameters()) and scaler.get_scale() == 2.0**10


# ---------------------------------------------------------------------- in Lightning's loop
class Toy(L.LightningModule):
    """One linear layer trained through the guard. ``bad``: batch index -> "loss" or "grad" (see
    :func:`toy_loss`); ``uncounted``: batches stepped without advancing ``global_step``."""

    def __init__(self, kind: str = "for-loop", clip_val: float = 0.0, bad: dict | None = None,
                 uncounted: tuple = (), bad_rank: int | None = None):
        super().__init__()
        self.automatic_optimization = False
        torch.manual_seed(0)
        self.net = nn.Linear(4, 1)
        self.kind, self.bad, self.uncounted, self.bad_rank = kind, bad or {}, set(uncounted), bad_rank
        self.guard = UpdateGuard(self, clip_val)
        self.log_: list[dict] = []

    def training_step(self, batch, batch_idx):
        bad = self.bad.get(batch_idx) if self.bad_rank in (None, self.global_rank) else None
        before = weights(self.net)
        norm, ok = self.guard.step(self.optimizers(), toy_loss(self.net, batch, bad),
                                   counted=batch_idx not in self.uncounted)
        self.log_.append({"ok": bool(ok), "changed": changed(before, self.net), "norm": float(norm)})

    def on_before_optimizer_step(self, optimizer):
        self.guard.check(optimizer)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2, **OPTIMIZERS[self.kind])

    def train_dataloader(self):
        return DataLoader(torch.randn(10, 4, generator=torch.Generator().manual_seed(1)), batch_size=2)


def fit(module: L.LightningModule, **options) -> L.Trainer:
    trainer = L.Trainer(**{"accelerator": "cpu", "devices": 1, "max_epochs": 1, "logger": False,
                           "enable_checkpointing": False, "enable_progress_bar": False,
                           "enable_model_summary": False, **options})
    trainer.fit(module)
    return trainer


@pytest.mark.integration
@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_in_lightning_every_path_skips_a_non_finite_update(kind):
    """Five batches: 1 has an inf loss (finite gradients), 2 NaN gradients; 2 and 3 are uncounted
    steps. Run in 32-bit and under a 16-mixed GradScaler (Lightning refuses ``precision=16-mixed``
    on a CPU; the plugin with a CPU scaler runs the code path of a GPU run)."""
    runs = {}
    for precision in ("32", "16-mixed"):
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1000)
        module = Toy(kind, clip_val=1e-3, bad={1: "loss", 2: "grad"}, uncounted=(2, 3))
        plugins = [MixedPrecision("16-mixed", "cpu", scaler=scaler)] if precision == "16-mixed" else []
        trainer = fit(module, plugins=plugins)
        runs[precision] = module.log_
        assert [s["ok"] for s in module.log_] == [True, False, False, True, True]
        assert [s["changed"] for s in module.log_] == [True, False, False, True, True]
        assert all(torch.isfinite(p).all() for p in module.parameters())
        assert trainer.global_step == 3  # the uncounted steps (batches 2 and 3) left it alone
        assert adam_steps(trainer.optimizers[0]) == 3
        assert not hasattr(trainer.optimizers[0], "found_inf")
        if precision == "16-mixed":  # lowered for the NaN gradients; for the inf loss only where it saw one
            assert scaler.get_scale() == 2.0**10 / (4 if kind == "fused" else 2)
    for s32, s16 in zip(runs["32"], runs["16-mixed"]):  # the norm is unscaled under the scaler
        if s32["ok"]:
            assert s16["norm"] == pytest.approx(s32["norm"], rel=1e-2)


class TwoRanks(L.Callback):
    """Writes each rank's step log to ``folder/rank{N}.json`` at the end of training."""

    def __init__(self, folder: str):
        self.folder = folder

    def on_train_end(self, trainer, pl_module):
        log = {"steps": pl_module.log_, "weights": [p.detach().flatten().tolist() for p in pl_module.parameters()]}
        Path(self.folder, f"rank{trainer.global_rank}.json").write_text(json.dumps(log))


@pytest.mark.integration
def test_one_ranks_bad_update_is_skipped_on_every_rank(tmp_path):
    """ddp_gan (gradients averaged in the module): rank 1's non-finite loss at batch 1 makes both
    ranks skip that update, and the ranks end with the same weights."""
    import lightning_modules.strategies  # noqa: F401 - registers ddp_gan

    module = Toy("fused", bad={1: "loss"}, bad_rank=1)
    fit(module, devices=2, strategy="ddp_gan_spawn", callbacks=[TwoRanks(str(tmp_path))])
    logs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for log in logs:
        assert [s["ok"] for s in log["steps"]] == [True, False, True]
        assert [s["changed"] for s in log["steps"]] == [True, False, True]
    assert logs[0]["weights"] == logs[1]["weights"]
