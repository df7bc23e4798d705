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
    """Run one of the project's entry points as a user would."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, (ROOT, *pythonpath)))}
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


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
    """A cache folder holding the shapes oracle, trained once per test session."""
    from datamodules.shapes_oracle import load_or_train

    cache = tmp_path_factory.mktemp("oracle_cache")
    load_or_train(cache)
    return cache


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
