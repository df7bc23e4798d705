"""Shared helpers: compose the real Hydra config (as train.py does) with small, fast overrides."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

# Before any test module imports transformers / huggingface_hub, which read these once at import.
os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
# Under pytest-xdist (pyproject's -n auto) each worker is one of the cores: one thread per worker and
# per process it starts (set before torch is imported, which reads it once), so the workers do not
# oversubscribe the machine. The tests' networks are tiny; a second thread buys them little.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")

# Small and quick: tiny random BERT, narrow networks, loader in the main process, few val batches.
FAST = [
    "encoder=tiny",
    "data.batch_size=4",
    "data.num_workers=0",
    "data.val_size=8",
    "model.generator.base_channels=8",
    "model.discriminator.base_channels=8",
    "model.samples_per_prompt=2",
    "callbacks.progress_bar=null",
    "callbacks.sample_metrics=null",
    "trainer.accelerator=cpu",
    "trainer.limit_val_batches=1",
]
SHAPES_ONLY = ("data.val_size=8",)
# the hinge loss: a NaN real batch then reaches D's loss only (GAN-GA's relativistic G loss reads the
# real pairs too, so there both updates are skipped)
HINGE = ["model.loss=hinge", "model.gp_weight=2.0"]


def presets(group: str) -> list[str]:
    """The names of a config group's presets (``conf/GROUP/*.yaml``)."""
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


MODELS = tuple(m for m in presets("model") if m != "base")  # every model preset; base.yaml is their defaults


@pytest.fixture(autouse=True, scope="session")
def offline_env(tmp_path_factory):
    wandb_dir = tmp_path_factory.mktemp("wandb")
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_MODE="offline",
                      WANDB_DIR=str(wandb_dir), WANDB_CACHE_DIR=str(wandb_dir / "cache"),
                      WANDB_CONFIG_DIR=str(wandb_dir / "config"), WANDB_SILENT="true")


def compose_train(output_dir: Path, overrides: list[str] = ()):
    """The train config as `python train.py OVERRIDES` would see it, writing to ``output_dir``."""
    GlobalHydra.instance().clear()
    fast = FAST
    if any(o.startswith("data=") and o != "data=shapes" for o in overrides):
        fast = [o for o in FAST if o not in SHAPES_ONLY]
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("train", overrides=[*fast, *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def run_script(script: str, *args: str, cwd: Path, timeout: int = 300,
               pythonpath: tuple[Path, ...] = ()) -> subprocess.CompletedProcess:
    """Run one of the project's entry points as a user would, in a process of its own: a fork of a
    process that has imported the third-party libraries (tests/zygote.py; GAN_GA_TESTS_NO_ZYGOTE=1:
    a fresh interpreter)."""
    import zygote

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, (ROOT, *pythonpath)))}
    return zygote.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, timeout=timeout)


def random_inception_file(path: Path) -> Path:
    """The real TF-compatible Inception architecture with Kaiming-initialised random weights, saved
    as a weights file for ``inception_weights=`` (and torch-fidelity's
    ``--feature-extractor-weights-path``): the default init gives degenerate features."""
    import torch
    from torch import nn
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):  # skip the pretrained weights during construction
            return None

    empty = path.with_suffix(".empty")
    torch.save({}, empty)
    net = Unloaded("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    torch.manual_seed(0)
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight)
    torch.save(net.state_dict(), path)
    return path


def export_and_generate_alike(ckpt: Path, tmp_path: Path):
    """export.py on ``ckpt`` into ``tmp_path/export``, then generate.py from the checkpoint and from the
    export folder, which must draw the same grid: returns the folder and that grid (uint8 HxWx3)."""
    import numpy as np
    from PIL import Image

    out = tmp_path / "export"
    result = run_script("export.py", f"ckpt_path={ckpt}", f"out={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # the tiny test encoder has random weights, so they are part of the model and exported too
    assert {p.name for p in out.iterdir()} == {"generator_ema.safetensors", "encoder.safetensors", "config.yaml",
                                               "export.json", "samples.png", "README.md"}
    images = {}
    for name, source in (("ckpt", ckpt), ("export", out)):
        result = run_script("generate.py", f"ckpt_path={source}", "prompts=[a red circle]", "num_per_prompt=2",
                            f"out_dir={tmp_path / name}", f"hydra.run.dir={tmp_path / name}_run", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        images[name] = np.asarray(Image.open(tmp_path / name / "000_a_red_circle.png"))
    assert np.array_equal(images["ckpt"], images["export"])
    return out, images["ckpt"]


def assert_same_ema_generator(a, b) -> None:
    """Two loaded modules (a checkpoint's, an export's) hold the same EMA generator, bit for bit."""
    import torch

    theirs = b.generator_ema.state_dict()
    for key, value in a.generator_ema.state_dict().items():
        assert torch.equal(value, theirs[key]), key


@pytest.fixture(scope="session")
def random_inception(tmp_path_factory) -> Path:
    """One random_inception_file per test session (building it takes seconds); tests only read it."""
    return random_inception_file(tmp_path_factory.mktemp("inception") / "inception.pth")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A short real training (tiny encoder, 32x32) with checkpoints and a sample grid."""
    from lightning_modules.training import run_training

    out = tmp_path_factory.mktemp("trained")
    cfg = compose_train(out, ["trainer.max_steps=8", "trainer.val_check_interval=2", "trainer.log_every_n_steps=1"])
    run_training(cfg)
    return out


@pytest.fixture(scope="session")
def oracle_cache(tmp_path_factory) -> Path:
    """An empty cache folder for runs that read the shapes oracle: the shipped oracle serves them
    (nothing is trained or written here, which the tests that load it check)."""
    return tmp_path_factory.mktemp("oracle_cache")


class InjectNaN:
    """A Lightning callback (built by Hydra from ``+callbacks.inject._target_=conftest.InjectNaN``)
    that fills the real images of the chosen batches with NaN: the divergence guard's test input."""

    def __new__(cls, *, batches: list[int]):
        import lightning as L

        class _Inject(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if int(pl_module.batches_seen) in batches:
                    batch["image"].fill_(float("nan"))

        return _Inject()


class SetLearningRate:
    """A Lightning callback (``+callbacks.set_lr._target_=conftest.SetLearningRate``) that sets G's
    learning rate to ``lr`` (e.g. inf) from batch ``at`` on: a run whose weights turn non-finite."""

    def __new__(cls, *, at: int, lr: float):
        import lightning as L

        class _SetLR(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if int(pl_module.batches_seen) >= at:
                    for group in trainer.optimizers[0].param_groups:
                        group["lr"] = float(lr)

        return _SetLR()


class SignalOnSave:
    """A Lightning callback (``+callbacks.signal_on_save._target_=conftest.SignalOnSave``): rank 0
    sends SIGTERM to its whole process group (every rank) while its first checkpoint is being written."""

    def __new__(cls):
        import os
        import signal

        import lightning as L

        class _Signal(L.Callback):
            sent = False

            def on_save_checkpoint(self, trainer, pl_module, checkpoint):
                if trainer.is_global_zero and not self.sent:
                    self.sent = True
                    os.killpg(os.getpgrp(), signal.SIGTERM)

        return _Signal()
