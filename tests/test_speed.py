"""Speed switches and mixed-precision correctness: lazy MA-GP with its optimizer correction, the
fused-Adam skip of a bad step on the device, 16-mixed loss scaling, a float32 EMA under bf16-true,
torch.compile with its eager fallback, and ``precision: auto``."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from omegaconf import OmegaConf

from conftest import HINGE, compose_train
from lightning_modules.components.ema import ema_update
from lightning_modules.loading import build, build_module
from lightning_modules.training import build_trainer, resolve_precision, run_training

NAN_AT_2 = ["+callbacks.inject._target_=conftest.InjectNaN", "+callbacks.inject.batches=[2]", *HINGE]


def _ckpt(run) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)


@pytest.mark.integration
def test_lazy_penalty_is_its_own_step_with_corrected_lr_and_betas(tmp_path):
    cfg = compose_train(tmp_path, ["trainer.max_steps=100", "trainer.limit_train_batches=6", "trainer.max_epochs=1",
                                   "trainer.val_check_interval=100", "trainer.log_every_n_steps=1",
                                   "model.gp_every=4", "model.optimizer_d.lr=4e-4", "model.optimizer_d.betas=[0.5,0.9]"])
    run_training(cfg)
    ckpt = _ckpt(tmp_path)
    assert ckpt["gan_ga"]["batches_seen"] == 6
    assert ckpt["global_step"] == 6 * 2  # the penalty steps (batches 0 and 4) are not counted
    group = ckpt["optimizer_states"][1]["param_groups"][0]
    assert group["lr"] == pytest.approx(4e-4 * 4 / 5)
    assert group["betas"] == pytest.approx((0.5**0.8, 0.9**0.8))
    d_state = next(iter(ckpt["optimizer_states"][1]["state"].values()))
    assert int(d_state["step"]) == 8  # six main D steps + two penalty steps
    header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "train/d_gp" in header


@pytest.mark.integration
def test_fused_adam_skips_a_bad_step_on_the_device(tmp_path):
    cfg = compose_train(tmp_path, ["trainer.max_steps=10", "trainer.val_check_interval=100",
                                   "model.optimizer_g.fused=true", "model.optimizer_d.fused=true", *NAN_AT_2])
    run_training(cfg)
    ckpt = _ckpt(tmp_path)
    assert [int(ckpt["state_dict"][k]) for k in ("skipped_d", "skipped_g", "bad_streak")] == [1, 0, 0]
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    g_state, d_state = (next(iter(s["state"].values())) for s in ckpt["optimizer_states"])
    # 5 batches: 5 G steps; 5 main D steps less the NaN batch's, plus lazy MA-GP steps at batches 0 and 4
    assert int(g_state["step"]) == 5 and int(d_state["step"]) == 4 + 2
    assert all(torch.isfinite(t).all() for s in ckpt["optimizer_states"] for st in s["state"].values()
               for t in st.values() if torch.is_tensor(t))


@pytest.mark.integration
def test_a_skipped_step_under_16_mixed_lowers_the_loss_scale(tmp_path):
    """Lightning refuses ``precision=16-mixed`` on a CPU, so the test passes the same plugin with a
    CPU GradScaler: the code path of a GPU run (unscale, hook, scaler.step, scaler.update)."""
    cfg = compose_train(tmp_path, ["trainer.max_steps=10", "trainer.val_check_interval=100",
                                   "trainer.log_every_n_steps=1", "model.grad_clip_val=1.0", *NAN_AT_2])
    datamodule = build(cfg.data)
    module = build_module(cfg)
    OmegaConf.set_struct(cfg, False)
    cfg.trainer.precision = "32-true"
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1000)
    plugin = MixedPrecision("16-mixed", "cpu", scaler=scaler)
    trainer = build_trainer(cfg)
    trainer = L.Trainer(**{**_trainer_kwargs(cfg), "plugins": [plugin], "callbacks": trainer.callbacks,
                           "logger": trainer.loggers})
    trainer.fit(module, datamodule=datamodule)
    assert scaler.get_scale() == 2.0**9  # one overflow (the NaN batch's D step), one halving
    assert [int(module.skipped_d), int(module.skipped_g), int(module.bad_streak)] == [1, 0, 0]
    assert all(torch.isfinite(p).all() for p in module.parameters())
    rows = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    col = header.index("train/g_grad_norm")
    norms = [float(r.split(",")[col]) for r in rows[1:] if r.split(",")[col]]
    assert norms and max(norms) < 100  # unscaled: the scale (1024) is not in them


def _trainer_kwargs(cfg) -> dict:
    t = OmegaConf.to_container(cfg.trainer, resolve=True)
    t.pop("_target_")
    t.pop("precision")
    return t


@pytest.mark.integration
def test_ema_stays_float32_and_follows_the_generator_under_bf16(tmp_path):
    module = build_module(compose_train(tmp_path, []))
    module.to(torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in module.generator.parameters())
    assert all(p.dtype == torch.float32 for p in module.generator_ema.parameters())
    start = [p.detach().clone() for p in module.generator_ema.parameters()]
    with torch.no_grad():
        for p in module.generator.parameters():
            p.add_(1.0)  # the generator moved by 1 everywhere (as close as bf16 holds it)
    for _ in range(500):  # each step moves the EMA by ~1e-3, below bf16's resolution near 1
        ema_update(module.generator_ema, module.generator, 0.999)
    closed = [((e - s) / (g.float() - s)).mean().item()
              for e, s, g in zip(module.generator_ema.parameters(), start, module.generator.parameters())
              if (g.float() - s).abs().min() > 0.5]
    assert closed and min(closed) == pytest.approx(1 - 0.999**500, abs=1e-3)  # 39.4%, as in float32


@pytest.mark.integration
def test_a_bf16_true_run_trains_and_keeps_a_float32_ema(tmp_path):
    cfg = compose_train(tmp_path, ["trainer.max_steps=4", "trainer.val_check_interval=100",
                                   "trainer.precision=bf16-true"])
    run_training(cfg)
    state = _ckpt(tmp_path)["state_dict"]
    assert state["generator.seed.weight"].dtype == torch.bfloat16
    assert state["generator_ema.seed.weight"].dtype == torch.float32
    assert torch.isfinite(state["generator_ema.seed.weight"]).all()


@pytest.mark.integration
def test_speed_switches_run_together(tmp_path):
    cfg = compose_train(tmp_path, ["trainer.max_steps=8", "trainer.val_check_interval=2", "model.channels_last=true",
                                   "model.reuse_fake=true", "model.gp_every=2", "model.optimizer_g.fused=false", "model.optimizer_g.foreach=true",
                                   "model.optimizer_d.fused=true"])
    run_training(cfg)
    assert (tmp_path / "samples" / "latest.png").is_file()


@pytest.mark.integration
@pytest.mark.slow
def test_compile_switch_trains_with_compiled_networks(tmp_path):
    cfg = compose_train(tmp_path, ["trainer.max_steps=6", "trainer.val_check_interval=100", "model.compile=true",
                                   "model.gp_every=2"])
    datamodule = build(cfg.data)
    module = build_module(cfg)
    with _no_fallback():
        build_trainer(cfg).fit(module, datamodule=datamodule)
    assert module._fast and all(fn.compiled is not None for fn in module._fast.values())
    assert all(torch.isfinite(p).all() for p in module.parameters())


class _no_fallback:
    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings(record=True)
        self.caught = self._catch.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)
        fallbacks = [w for w in self.caught if "torch.compile of" in str(w.message)]
        assert not fallbacks, [str(w.message) for w in fallbacks]


@pytest.mark.integration
@pytest.mark.slow
def test_compile_failure_warns_and_trains_eagerly(tmp_path, monkeypatch):
    """A C++ compiler that does not exist: inductor fails for real, the run goes on eagerly (half a
    minute of inductor lowering on a CPU: CI runs the test below, whose backend fails sooner)."""
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", ("/nonexistent/g++",))
    _trains_eagerly_after_a_compile_failure(tmp_path)


@pytest.mark.integration
def test_a_failing_compiler_backend_warns_and_trains_eagerly(tmp_path, monkeypatch):
    """torch.compile for real, with a backend that fails on the graph dynamo hands it."""
    def failing_backend(graph, example_inputs):
        raise RuntimeError("no compiler here")

    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None, dynamic=None: compile_(fn, backend=failing_backend,
                                                                                         dynamic=dynamic))
    _trains_eagerly_after_a_compile_failure(tmp_path)


def _trains_eagerly_after_a_compile_failure(tmp_path) -> None:
    cfg = compose_train(tmp_path, ["trainer.max_steps=4", "trainer.val_check_interval=100", "model.compile=true"])
    datamodule = build(cfg.data)
    module = build_module(cfg)
    with pytest.warns(UserWarning, match="torch.compile of the generator failed"):
        build_trainer(cfg).fit(module, datamodule=datamodule)
    assert module.batches_seen == 2 and module._fast["generator"].compiled is None


def test_bad_switch_values_are_named(tmp_path):
    from lightning_modules.config_checks import ConfigError

    with pytest.raises(ConfigError, match=r"model.compile='fast': allowed: \[False, True"):
        build_module(compose_train(tmp_path, ["model.compile=fast"]))
    with pytest.raises(ConfigError, match=r"model.gp_every=0: must be >= 1"):
        build_module(compose_train(tmp_path, ["model.gp_every=0"]))
    from lightning_modules.config_checks import validate

    with pytest.raises(ConfigError, match=r"model.optimizer_d.fused=True: fused=true and foreach=true exclude"):
        validate(compose_train(tmp_path, ["model.optimizer_d.foreach=true"]))


def test_precision_auto_is_float32_on_a_cpu_without_native_bf16(tmp_path, monkeypatch):
    import lightning_modules.training as training

    cfg = compose_train(tmp_path, ["trainer.precision=auto"])
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision(cfg.trainer) == "32-true"
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision(cfg.trainer) == "bf16-mixed"
    OmegaConf.set_struct(cfg, False)
    cfg.trainer.precision = "16-true"
    assert resolve_precision(cfg.trainer) == "16-true"


def test_weight_digest_is_the_same_in_either_memory_format():
    """DDP's consistency digest read channels_last 1x1-conv weights as non-viewable bytes."""
    from lightning_modules.callbacks import weights_digest

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 1), torch.nn.Conv2d(16, 4, 3))
    before = weights_digest(net)
    net.to(memory_format=torch.channels_last)
    assert weights_digest(net) == before
