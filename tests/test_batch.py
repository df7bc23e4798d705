"""The one batch structure (datamodules/batch.py): what every data module yields, and the check that
names a key out of place."""

from __future__ import annotations

import pytest
import torch

import caption_layouts as layouts
from conftest import compose_train
from datamodules.batch import KEYS, REQUIRED, check_batch
from gan_ga_utils.errors import DataError
from lightning_modules.training import build_data_and_module


def _first_train_batch(datamodule) -> dict:
    return next(iter(datamodule.train_dataloader()))


def test_a_shapes_batch_holds_only_the_listed_keys(tmp_path):
    cfg = compose_train(tmp_path, ["data.negatives=true", "data.open_probability=0.5"])
    datamodule, _ = build_data_and_module(cfg)
    batch = _first_train_batch(datamodule)
    check_batch(batch, "shapes")
    assert {"attributes", "named", "negative_caption", "negative_attributes"} <= set(batch)
    assert batch["image"].shape[1:] == (3, cfg.data.image_size, cfg.data.image_size)
    assert batch["attributes"].dtype == torch.long and batch["named"].dtype == torch.bool
    assert len(batch["caption"]) == len(batch["negative_caption"]) == batch["image"].shape[0]


def test_a_caption_batch_with_the_text_cache_holds_only_the_listed_keys(tmp_path):
    layouts.folder(tmp_path / "data")
    cfg = compose_train(tmp_path / "run", ["data=folder", f"data.root={tmp_path / 'data'}", "data.image_size=32",
                                           "data.cache_text=true", f"paths.cache_dir={tmp_path / 'cache'}"])
    datamodule, module = build_data_and_module(cfg)
    assert datamodule.text_encoder is module.encoder  # built once, handed to both
    batch = _first_train_batch(datamodule)
    check_batch(batch, "folder")
    assert {"caption_id", "skipped", "text_tokens", "text_mask", "text_pooled"} <= set(batch)
    assert batch["text_pooled"].shape == (batch["image"].shape[0], module.encoder.out_dim)


def test_the_check_names_a_missing_and_an_unknown_key():
    with pytest.raises(DataError, match=r"my_data: a batch lacks \['caption'\] and has unknown keys \['label'\]"):
        check_batch({"image": torch.zeros(1, 3, 8, 8), "label": torch.zeros(1)}, "my_data")
    check_batch({"image": torch.zeros(1, 3, 8, 8), "caption": ["a red circle"]}, "my_data")
    assert set(REQUIRED) <= KEYS
