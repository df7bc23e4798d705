"""Files written by an earlier version still load: a checkpoint and an export folder written at
commit 9065248 (tests/data/written_by_9065248/README.md has the commands), before the discriminator's
rejected variants went and the update guard and the data flow were restructured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import compose_train
from lightning_modules.evaluation import generate_for
from lightning_modules.file_config import DroppedSettingWarning
from lightning_modules.loading import load_module
from lightning_modules.training import run_training

WRITTEN = Path(__file__).parent / "data" / "written_by_9065248"
PROMPTS = ["a red circle", "a small blue star on the left"]
# the run that wrote last.ckpt, as overrides of today's config (its data and model sizes)
RUN = ["encoder=minilm", "data.batch_size=4", "data.num_workers=0", "data.val_size=8", "data.image_size=32",
       "model.z_dim=8", "model.generator.base_channels=2", "model.discriminator.base_channels=2",
       "model.discriminator.cond_dim=8", "model.discriminator.match_dim=8", "fusion.cond_dim=8", "fusion.hidden=8",
       "fusion.heads=1", "fusion.dim_head=8", "model.samples_per_prompt=1", "callbacks.progress_bar=null",
       "callbacks.sample_metrics=null", "trainer.accelerator=cpu", "trainer.limit_val_batches=1",
       "trainer.val_check_interval=2", "logger=csv",
       "model.discriminator.projection_resolution=8"]  # that commit's default (16 since): its model settings


def test_an_earlier_checkpoint_and_export_load_and_generate_what_they_generated_then():
    then = torch.from_numpy(np.load(WRITTEN / "images.npy"))
    with pytest.warns(DroppedSettingWarning, match=r"last.ckpt.*model.discriminator.match_features='shared'"):
        module = load_module(WRITTEN / "last.ckpt")
    # to float32 rounding: the cross-attention's arithmetic was written out after that commit
    # (components/fusion.py masked_attention); every weight and the sampling are as they were
    torch.testing.assert_close(generate_for(module, PROMPTS, 2, seed=0), then, atol=1e-5, rtol=0)
    with pytest.warns(DroppedSettingWarning, match=r"config.yaml.*match_global=False"):
        exported = load_module(WRITTEN / "export")
    torch.testing.assert_close(generate_for(exported, PROMPTS, 2, seed=0), then, atol=1e-5, rtol=0)


@pytest.mark.integration
def test_training_resumes_from_an_earlier_checkpoint_where_it_stopped(tmp_path):
    run = tmp_path / "run"
    run_training(compose_train(run, [*RUN, "trainer.max_steps=8", f"ckpt_path={WRITTEN / 'last.ckpt'}"]))
    after = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert after["global_step"] == 8 and after["gan_ga"]["batches_seen"] == 4
    # written before the data module kept its position: it continues from the module's batches_seen
    assert after["ShapesDataModule"] == {"batches_trained": 4}
