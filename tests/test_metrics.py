"""Shapes oracle and caption accuracy, Inception metrics on a random (properly initialised) Inception,
evaluate.py end to end on a checkpoint the tests train."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from conftest import run_script
from gan_ga_utils.errors import MetricsError
from lightning_modules.metrics import caption_accuracy as ca
from lightning_modules.metrics import clip as clip_metrics
from lightning_modules.metrics import inception as im
from lightning_modules.metrics import shapes_oracle as so
from lightning_modules.metrics.frechet import frechet_distance


@pytest.fixture(scope="session")
def oracle(oracle_cache):
    """The shipped oracle (the default recipe's weights): loading it trains nothing."""
    return so.load_or_train(oracle_cache, log=lambda *_: pytest.fail("the shipped oracle was not used"))


@pytest.fixture(scope="module")
def held_out():
    return so.render_batch(seed=0, start=0, n=2000, split=3)  # seeds the oracle never trained on


@pytest.mark.integration
def test_oracle_reads_held_out_renders(oracle, held_out):
    images, scenes = held_out
    scores = ca.caption_scores(oracle, images, scenes)
    assert min(scores[k] for k in ("shape", "color", "size", "position")) >= 0.98, scores
    assert scores["caption"] >= 0.95, scores


@pytest.mark.integration
def test_caption_accuracy_of_noise_is_near_chance(oracle, held_out):
    images, scenes = held_out
    noise = torch.rand(500, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    scores = ca.caption_scores(oracle, noise, scenes[:500])
    assert scores["caption"] <= 0.02 and scores["color"] <= 0.3 and scores["shape"] <= 0.35, scores
    # mismatched scenes: right images, wrong captions
    wrong = ca.caption_scores(oracle, images[:500], scenes[500:1000])
    assert wrong["caption"] <= 0.05, wrong


@pytest.mark.integration
def test_a_missing_object_is_wrong_on_every_attribute(oracle):
    from datamodules.shapes import Scene, ShapeObject, render

    described = Scene((ShapeObject("circle", "red", "large", "left"),))
    blank = -torch.ones(4, 3, 32, 32)
    scores = ca.caption_scores(oracle, blank, [described] * 4)
    assert scores == {"shape": 0.0, "color": 0.0, "size": 0.0, "position": 0.0, "caption": 0.0}
    # the same object drawn in the wrong cell: right shape, colour and size, wrong position
    moved = Scene((ShapeObject("circle", "red", "large", "right"),))
    image = torch.from_numpy(np.asarray(render(moved, 32))).permute(2, 0, 1).float()[None] / 127.5 - 1
    scores = ca.caption_scores(oracle, image, [described])
    assert scores == {"shape": 1.0, "color": 1.0, "size": 1.0, "position": 0.0, "caption": 0.0}


@pytest.fixture(scope="module")
def test_set(oracle):
    """The test split's evaluation set of a one-object shapes run (240 captions + the diversity
    blocks), its real images and their oracle readout."""
    from datamodules.shapes import ShapesDataModule
    from lightning_modules.evaluation import eval_set

    data = eval_set(ShapesDataModule(max_objects=1, num_workers=0), "test", 240, seed=0)
    images = data.images(range(len(data)))
    return data, images, ca.oracle_readout(oracle, images)


@pytest.mark.integration
def test_real_renders_score_the_ceiling_and_blank_images_zero_on_every_subset(oracle, test_set):
    data, images, real = test_set
    scores = ca.caption_accuracy(real, real, data.scenes, data.blocks)
    for subset in ("seen", "unseen_composition", "unseen_phrasing"):
        assert scores[f"caption_accuracy/{subset}/caption"] >= 0.95, scores
        assert scores[f"caption_accuracy/{subset}/real_reference"] == scores[f"caption_accuracy/{subset}/caption"]
    blank = ca.oracle_readout(oracle, -torch.ones_like(images))
    zero = ca.caption_accuracy(blank, real, data.scenes, data.blocks)
    for subset in ("seen", "unseen_composition", "unseen_phrasing"):
        for value in ("caption", "shape", "color", "size", "position"):
            assert zero[f"caption_accuracy/{subset}/{value}"] == 0.0, (subset, value)
    assert zero["diversity/spread_ratio"] == 0.0 and zero["diversity/open_tv"] > 0.8


@pytest.mark.integration
def test_diversity_of_real_renders_and_of_a_generator_that_ignores_its_noise(oracle, test_set):
    """Real renders of the open prompts vary as the data does (open_tv near 0, spread near 1); the
    same image repeated for every sample of a prompt (noise ignored) scores high open_tv and no spread."""
    data, images, real = test_set
    scores = ca.caption_accuracy(real, real, data.scenes, data.blocks)
    assert scores["diversity/open_tv"] < 0.05 and scores["diversity/open_tv_raw"] > 0.05, scores
    assert 0.85 < scores["diversity/spread_ratio"] < 1.15 and scores["diversity/spread_prompts"] == ca.PROMPTS
    assert scores["diversity/open_caption"] >= 0.95 and scores["diversity/spread_caption"] >= 0.95
    collapsed = _collapsed_scores(oracle, test_set)
    assert collapsed["diversity/open_tv"] > 0.4 and collapsed["diversity/spread_ratio"] < 0.05, collapsed
    assert collapsed["diversity/spread_caption"] >= 0.95  # right, and still collapsed: accuracy is not diversity


def _collapsed_scores(oracle, test_set) -> dict[str, float]:
    """The scores of the test set's first image of each diversity prompt repeated for every sample of it."""
    data, images, real = test_set
    copies = images.clone()
    for block in ("open", "spread"):
        start, stop = data.blocks[block]
        for first in range(start, stop, ca.PER_PROMPT):
            copies[first : first + ca.PER_PROMPT] = images[first]
    return ca.caption_accuracy(ca.oracle_readout(oracle, copies), real, data.scenes, data.blocks)


@pytest.mark.integration
def test_oracle_frechet_distance(oracle, held_out):
    images, _ = held_out
    a, b = oracle.features(images[:1000]), oracle.features(images[1000:])
    same = frechet_distance(a, b)
    noisy = frechet_distance(a, oracle.features((images[1000:] + 0.5 * torch.randn_like(images[1000:])).clamp(-1, 1)))
    assert abs(frechet_distance(a, a)) < 1e-6 * max(1.0, float(a.var(0).sum()))
    assert noisy > 10 * same > 0


def test_the_shipped_oracle_is_the_current_renderers():
    """The shipped weights were trained for the renderer as it is (else they would read drawings they
    never saw): after a change to how shapes are drawn, ``python -m lightning_modules.metrics.shapes_oracle``
    writes them again."""
    assert so.SHIPPED.is_file()
    assert so.shipped_digest() == so.renderer_digest(), (
        f"{so.SHIPPED} was trained for renderer {so.shipped_digest()}, the renderer is now {so.renderer_digest()}: "
        "run python -m lightning_modules.metrics.shapes_oracle and commit the file")


@pytest.mark.integration
def test_another_recipe_or_renderer_trains_an_oracle_of_its_own(tmp_path, monkeypatch):
    """A recipe other than the shipped one is trained once and cached under the renderer digest and
    the recipe; a changed renderer names another file (and no longer matches the shipped one)."""
    recipe = {"images": 512, "epochs": 1}
    logs: list[str] = []
    so.load_or_train(tmp_path, log=logs.append, **recipe)
    files = list((tmp_path / "shapes_oracle").glob("*.safetensors"))
    assert len(files) == 1 and files[0].stem.startswith(so.renderer_digest() + "-")
    assert any("training" in line for line in logs)
    logs.clear()
    so.load_or_train(tmp_path, log=logs.append, **recipe)
    assert not any("training" in line for line in logs)  # cached
    monkeypatch.setattr(so.shapes, "SIZE_RADIUS", {"small": 0.1, "large": 0.2})
    assert not files[0].stem.startswith(so.renderer_digest())  # a changed renderer names another file: retrained
    assert so.shipped_digest() != so.renderer_digest()  # and the shipped weights are not used for it


@pytest.mark.integration
def test_fid_kid_is_on_a_random_inception(random_inception):
    inception = im.load_inception(random_inception)
    gen = torch.Generator().manual_seed(0)
    base = torch.rand(10, 3, 32, 32, generator=gen) * 2 - 1
    other = torch.rand(10, 3, 32, 32, generator=gen) * 2 - 1
    shifted = (other * 0.3 + 0.6).clamp(-1, 1)
    f_base, logits = im.inception_features(inception, base)
    f_other, _ = im.inception_features(inception, other)
    f_shift, _ = im.inception_features(inception, shifted)
    assert f_base.shape == (10, 2048) and f_base.std() > 0
    shifted_fid = im.fid(f_base, f_shift)  # each a 2048-dimensional matrix square root: seconds
    assert abs(im.fid(f_base, f_base)) < 1e-3 * shifted_fid
    assert shifted_fid > 2 * im.fid(f_base, f_other)
    assert im.kid(f_base, f_shift, subsets=5)[0] > im.kid(f_base, f_other, subsets=5)[0]
    score, _ = im.inception_score(logits, splits=2)
    assert 1.0 <= score <= 1008


def test_missing_inception_weights_say_where_to_get_them(tmp_path):
    with pytest.raises(MetricsError, match="inception_weights=.*weights-inception-2015-12-05"):
        im.load_inception(tmp_path / "nope.pth")


@pytest.mark.integration
def test_evaluate_py_writes_metrics_json(trained_run, tmp_path, oracle_cache):
    out = tmp_path / "eval"
    clip = _tiny_clip(tmp_path / "clip")
    result = run_script("evaluate.py", f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}",
                        "metrics=[caption_accuracy,clip_score]", "num_samples=24", f"cache_dir={oracle_cache}",
                        f"clip_model={clip}", f"hydra.run.dir={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "metrics.json").read_text())
    m, protocol = report["metrics"], report["protocol"]
    assert {"caption_accuracy/caption", "caption_accuracy/color", "oracle_fd", "clip_score", "clip_score_real"} <= set(m)
    for subset in ("seen", "unseen_composition", "unseen_phrasing"):
        assert {f"caption_accuracy/{subset}/{k}" for k in ("caption", "shape", "color", "size", "position")} <= set(m)
    assert {"diversity/open_tv", "diversity/open_tv_floor", "diversity/spread_ratio", "diversity/open_caption"} <= set(m)
    assert protocol["diversity_samples"] == 2 * ca.PROMPTS * ca.PER_PROMPT
    assert "diversity/open_tv" in protocol["metrics"]["caption_accuracy"]
    assert protocol["clip"]["model"] == str(clip)
    # the real renders of the same captions: the ceiling, far above the generator's 4 batches
    assert m["caption_accuracy/real_reference"] >= 0.9
    assert m["caption_accuracy/real_reference"] > m["caption_accuracy/caption"] + 0.1
    assert protocol["samples"] == 24 and protocol["real_split"] == "test" and protocol["generator"] == "EMA"
    assert protocol["oracle"]["renderer_digest"] == so.renderer_digest()
    assert set(protocol["metrics"]) == {"caption_accuracy", "clip_score"}  # each name's protocol, from the registry
    assert protocol["subset"]["seed"] == 0 and protocol["subset"]["split_images"] == 2048
    assert "caption_accuracy/caption" in result.stdout  # the printed table

    with pytest.raises(MetricsError, match="inception_weights is not set"):  # a UserError: one line, exit 2
        _evaluate(f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}", "metrics=[fid]", f"out_dir={out}")


def _evaluate(*overrides: str) -> dict:
    """evaluate.py's work in this process: its config composed with ``overrides``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from conftest import CONF
    from lightning_modules.evaluation import evaluate

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("evaluate", overrides=list(overrides))
    return evaluate(cfg)


@pytest.mark.integration
def test_training_logs_caption_accuracy_and_keeps_the_best_checkpoint(tmp_path, oracle_cache):
    import csv

    from conftest import compose_train
    from lightning_modules.training import run_training

    cfg = compose_train(tmp_path, ["trainer.max_steps=8", "trainer.val_check_interval=2", "trainer.log_every_n_steps=1",
                                   "+callbacks.sample_metrics._target_=lightning_modules.callbacks.SampleMetrics",
                                   f"+callbacks.sample_metrics.cache_dir={oracle_cache}", "+callbacks.sample_metrics.num_samples=32",
                                   f"+callbacks.sample_metrics.dirpath={tmp_path / 'checkpoints'}"])
    metrics_out = run_training(cfg)
    assert 0.0 <= metrics_out["metrics/caption_accuracy"] <= 1.0 and metrics_out["metrics/samples"] == 32
    rows = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").open()))
    values = [float(r["metrics/caption_accuracy"]) for r in rows if r.get("metrics/caption_accuracy")]
    assert len(values) == 2  # one per validation (4 batches, every 2)
    best = json.loads((tmp_path / "checkpoints" / "best.json").read_text())
    assert best["metric"] == "metrics/caption_accuracy" and best["value"] == max(values)
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()


def _tiny_clip(folder: Path) -> Path:
    """A real CLIPModel + CLIPProcessor, tiny and randomly initialised, saved as a local folder."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    folder.mkdir(parents=True)
    chars = list(bytes_to_unicode().values())
    vocab = {token: i for i, token in enumerate([*chars, *(c + "</w>" for c in chars), "<|startoftext|>", "<|endoftext|>"])}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    assert len(tokenizer) == len(vocab) and len(tokenizer("a red circle")["input_ids"]) > 3
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=len(vocab) - 2,
                         eos_token_id=len(vocab) - 1, pad_token_id=len(vocab) - 1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    return folder


def test_clip_score_with_a_local_clip(tmp_path):
    clip = clip_metrics.load_clip(_tiny_clip(tmp_path / "clip"))
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 32, 32, generator=gen) * 2 - 1
    captions = ["a red circle", "a blue square", "two dogs", "a cat"]
    score = clip_metrics.clip_score(images, captions, clip)
    assert 0.0 <= score <= 100.0
    assert clip_metrics.clip_score(images, captions, clip) == score  # deterministic
    with pytest.raises(MetricsError, match="clip_model=.*huggingface-cli download"):
        clip_metrics.load_clip(tmp_path / "no_clip_here")


@pytest.mark.integration
def test_evaluate_py_on_two_processes_matches_one(trained_run, oracle_cache, tmp_path):
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    args = [f"ckpt_path={ckpt}", "metrics=[caption_accuracy]", "num_samples=21", f"cache_dir={oracle_cache}",
            "device=cpu", "batch_size=12"]  # batches that cross the processes' shares
    reports = [_evaluate(*args, "devices=1", f"out_dir={tmp_path / 'eval1'}")]  # one process: this one
    result = run_script("evaluate.py", *args, "devices=2", f"hydra.run.dir={tmp_path / 'eval2'}", cwd=tmp_path,
                        timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    reports.append(json.loads((tmp_path / "eval2" / "metrics.json").read_text()))
    assert reports[0]["protocol"]["processes"] == 1
    assert reports[1]["protocol"]["processes"] == 2 and reports[1]["protocol"]["samples"] == 21
    for key, value in reports[0]["metrics"].items():
        assert reports[1]["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


class PerfectGenerator(L.LightningModule):
    """Draws exactly the scene of each caption it is asked for (a lookup of the renders of the val
    and test splits): a generator whose caption accuracy is 1 when it is scored on its own captions."""

    z_dim = 4

    def __init__(self, datamodule):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.renders = {}
        for split in ("val", "test"):
            data = datamodule.datasets[split]
            for i in range(len(data)):
                self.renders.setdefault(data.sample(i)[1], data[i]["image"])

    def training_step(self, batch, batch_idx):
        return (self.weight * 0).sum()

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def encode(self, captions):
        return list(captions)

    def generate_ema(self, z, captions):  # the diversity blocks' prompts: a blank image
        blank = -torch.ones_like(next(iter(self.renders.values())))
        return torch.stack([self.renders.get(c, blank) for c in captions])


@pytest.mark.integration
def test_training_metrics_score_the_scenes_of_the_captions_they_generated(tmp_path, random_inception, oracle_cache):
    """With caption accuracy and FID both on, each metric scores images of its own captions (as
    the real renders of them score, whatever the oracle); the captions are the val split's
    (best.ckpt is chosen on val, evaluate.py reports on test)."""
    from datamodules.shapes import ShapesDataModule
    from lightning_modules.callbacks import SampleMetrics

    data = ShapesDataModule(batch_size=8, num_workers=0, val_size=24, test_size=24, max_objects=1, train_size=64)
    callback = SampleMetrics(metrics=["caption_accuracy", "fid"], num_samples=24, cache_dir=str(oracle_cache),
                             inception_weights=str(random_inception), save_best=False)
    trainer = L.Trainer(max_steps=1, limit_val_batches=1, val_check_interval=1, num_sanity_val_steps=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[callback], default_root_dir=tmp_path)
    trainer.fit(PerfectGenerator(data), datamodule=data)
    assert callback.captions[:24] == [data.datasets["val"].sample(i)[1] for i in range(24)]
    accuracy = float(trainer.callback_metrics["metrics/caption_accuracy"])
    oracle = so.load_or_train(oracle_cache, log=lambda *_: pytest.fail("the shipped oracle was not used"))
    ceiling = ca.caption_scores(oracle, callback.data.images(range(24)), callback.data.scenes[:24])["caption"]
    assert accuracy == pytest.approx(ceiling, abs=1e-6)  # as the real renders of those captions score
    assert accuracy >= 0.9
    assert abs(float(trainer.callback_metrics["metrics/fid"])) < 1e-3  # the same val images: FID 0


def test_the_real_feature_cache_is_keyed_by_every_setting_that_changes_the_images(tmp_path):
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


def _snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    from gan_ga_utils.files import sha256_file

    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, sha256_file(p)) for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.mark.integration
def test_evaluate_changes_nothing_in_the_training_run(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import caption_layouts as layouts
    from conftest import CONF, compose_train
    from lightning_modules.evaluation import evaluate
    from lightning_modules.training import run_training
    from test_metrics import _tiny_clip

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


def test_the_evaluation_set_is_a_seeded_random_subset_of_a_class_sorted_split(tmp_path):
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


def test_inception_score_shuffles_before_splitting():
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


def test_the_frechet_distance_matches_the_closed_form_and_torchmetrics():
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


def test_the_public_inception_gives_the_features_torchmetrics_gave(random_inception):
    from torchmetrics.image.fid import NoTrainInceptionV3

    from lightning_modules.metrics.inception import INCEPTION_FEATURES, inception_features, load_inception
    from lightning_modules.sampling import uint8_pixels

    weights = random_inception
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    pool, logits = inception_features(load_inception(weights), images)
    before = NoTrainInceptionV3(name="inception-v3-compat", features_list=list(INCEPTION_FEATURES),
                                feature_extractor_weights_path=str(weights), antialias=False).eval()
    with torch.no_grad():
        old_pool, old_logits = before._torch_fidelity_forward(uint8_pixels(images))
    assert torch.equal(pool, old_pool.double()) and torch.equal(logits, old_logits.double())
