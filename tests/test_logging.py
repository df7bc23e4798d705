"""Loggers: a real W&B run in offline mode holds the scalars and the (non-black) sample images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import compose_train
from lightning_modules.training import run_training


@pytest.mark.integration
def test_wandb_offline_run_holds_scalars_and_sample_images_and_continues_on_resume(tmp_path, oracle_cache):
    overrides = ["logger=wandb", "logger.wandb.offline=true", "trainer.val_check_interval=2",
                 "trainer.log_every_n_steps=1", "+callbacks.sample_metrics._target_=lightning_modules.callbacks.SampleMetrics",
                 f"+callbacks.sample_metrics.cache_dir={oracle_cache}", "+callbacks.sample_metrics.num_samples=16"]
    cfg = compose_train(tmp_path, [*overrides, "trainer.max_steps=4"])
    run_training(cfg)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    run_id = runs[0].name.rsplit("-", 1)[-1]
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")["wandb_run_id"] == run_id
    pngs = list(runs[0].glob("files/media/images/samples/*.png"))
    assert pngs, list(runs[0].rglob("*"))[:20]
    for png in pngs:
        assert np.asarray(Image.open(png)).max() > 0  # uint8, not the black PNG of float images
    records = next(runs[0].glob("run-*.wandb")).read_bytes()  # the offline run's history records
    for key in (b"train/d_loss", b"train/g_loss", b"train/d_gp", b"val/match_margin", b"perf/images_per_sec",
                b"metrics/caption_accuracy", b"metrics/accuracy_color", b"samples/table"):
        assert key in records, key
    tables = list(runs[0].glob("files/media/table/samples/table_*.table.json"))
    assert tables, list(runs[0].rglob("*.json"))[:20]
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["batch", "prompt", "EMA samples"]
    assert [row[1] for row in table["data"]] == list(cfg.data.sample_prompts)
    assert b"table-file" in records  # logged as a W&B table (its images travel in the run's table artifact)

    # a resume continues the same W&B run (its id kept in the checkpoint), and replaces last.ckpt
    run_training(compose_train(tmp_path, [*overrides, "trainer.max_steps=6", "resume=auto"]))
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and {r.name.rsplit("-", 1)[-1] for r in runs} == {run_id}
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["wandb_run_id"] == run_id and ckpt["global_step"] == 6
    assert not list((tmp_path / "checkpoints").glob("last-v*"))


@pytest.mark.integration
def test_tensorboard_receives_scalars_and_grid(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = compose_train(tmp_path, ["logger=tensorboard", "trainer.max_steps=4", "trainer.val_check_interval=2",
                                   "trainer.log_every_n_steps=1", "callbacks.model_checkpoint=null"])
    run_training(cfg)
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert "train/d_loss" in events.Tags()["scalars"]
    assert "samples/grid" in events.Tags()["images"]


@pytest.mark.integration
def test_training_values_reach_the_logger_at_every_logged_batch(tmp_path):
    """The module logs only the batches whose values Lightning writes (every log_every_n_steps): each
    of them reaches the CSV with that batch's own count, none is skipped."""
    import csv

    cfg = compose_train(tmp_path, ["logger=csv", "trainer.max_steps=14", "trainer.val_check_interval=100",
                                   "trainer.log_every_n_steps=3", "callbacks.model_checkpoint=null"])
    run_training(cfg)
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    logged = [float(r["train/batches"]) for r in rows if r.get("train/batches")]
    assert logged == [3.0, 6.0], logged  # 7 batches (14 steps): batches 3 and 6
    assert all(r.get("train/d_loss") for r in rows if r.get("train/batches"))
