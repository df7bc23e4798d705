"""The real-data metrics of the reference network (lightning_modules/metrics/reference.py): label
columns read from a manifest, precision/recall and the memorisation distance on known feature sets,
a network that learns labels a picture shows, its cache, and evaluate.py's defaults on labelled real
data. Small data made here; one test reads emoji64 when it is on this machine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.captions import DataError
from datamodules.folder import FolderDataModule
from gan_ga_utils.errors import MetricsError
from lightning_modules.metrics import reference
from test_real_splits import EMOJI64

# group: warm / cool; subgroup: the colour
COLOURS = {"red": ((220, 30, 30), "warm"), "orange": ((240, 150, 20), "warm"),
           "blue": ((30, 60, 220), "cool"), "green": ((30, 180, 60), "cool")}
QUICK = {"epochs": 10, "batch_size": 32}  # a quicker network than the real one: 69 steps of 32


def _labelled_set(root: Path, per_colour: dict[str, int], *, image_size: int = 16) -> Path:
    """``root/SPLIT/COLOUR_K.png`` (a coloured square of random size and place on white) and a
    meta.jsonl with ``group`` and ``subgroup`` columns; ``per_colour``: images per colour and split."""
    rows = []
    rng = np.random.default_rng(0)
    for split, n in per_colour.items():
        for colour, (rgb, group) in COLOURS.items():
            for k in range(n):
                pixels = np.full((image_size, image_size, 3), 255, np.uint8)
                side = int(rng.integers(image_size // 3, image_size - 2))
                x, y = (int(v) for v in rng.integers(0, image_size - side + 1, 2))
                pixels[y : y + side, x : x + side] = np.clip(np.array(rgb) + rng.integers(-20, 21, 3), 0, 255)
                path = root / split / f"{colour}_{k}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(path)
                rows.append({"file": f"{split}/{colour}_{k}.png", "split": split, "group": group, "subgroup": colour,
                             "shape": f"{colour}-{k % 3}", "captions": [f"a {colour} square", f"{colour}, {group}"]})
    (root / "meta.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _module(root: Path, tmp_path: Path, **kwargs) -> FolderDataModule:
    dm = FolderDataModule(root=str(root), manifest="meta.jsonl", label_columns=["group", "subgroup"],
                          group_by="shape", image_size=16, cache_dir=str(tmp_path / "cache"), **kwargs)
    dm.setup("fit")
    return dm


def test_precision_recall_and_nearest_distance_on_known_sets():
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(200, 8, generator=gen)
    assert reference.precision_recall(real, real.clone()) == (1.0, 1.0)
    far = real + 100.0
    assert reference.precision_recall(real, far) == (0.0, 0.0)
    collapsed = real[:1].repeat(50, 1) + 1e-3 * torch.randn(50, 8, generator=gen)  # every sample one real image
    precision, recall = reference.precision_recall(real, collapsed)
    assert precision == 1.0 and recall < 0.1
    pool = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    assert reference.nearest_distance(torch.tensor([[3.0, 4.0], [10.0, 1.0]]), pool).tolist() == [5.0, 1.0]
    copies = reference.memorisation_scores({"ref_feat": real[:20]}, {"ref_feat": real[100:140]}, real[:100])
    assert copies["memorisation/nn_distance"] == 0.0 and copies["memorisation/nn_ratio"] == 0.0


def test_label_scores_count_unknown_labels_as_wrong():
    fake = {"ref_pred": torch.tensor([[0, 1], [1, 1], [0, 0], [0, 0]])}
    real = {"ref_pred": torch.tensor([[0, 1], [1, 0], [1, 0], [0, 0]])}
    targets = {"group": torch.tensor([0, 1, 1, 1]), "subgroup": torch.tensor([1, 0, 0, reference.UNKNOWN])}
    scores = reference.label_scores(fake, real, targets)
    assert scores["labels/group"] == 0.5 and scores["labels/group_real"] == 0.75
    assert scores["labels/subgroup"] == 0.5 and scores["labels/subgroup_real"] == 0.75  # the unknown one: wrong
    assert scores["labels/subgroup_ratio"] == pytest.approx(2 / 3)


def test_label_columns_are_read_from_the_manifest_and_a_missing_value_is_named(tmp_path):
    root = _labelled_set(tmp_path / "data", {"train": 3, "test": 1})
    dm = _module(root, tmp_path)
    record = dm.datasets["test"].records[0]
    assert record.labels == {"group": "warm", "subgroup": "red"}
    rows = (root / "meta.jsonl").read_text().splitlines()
    broken = json.loads(rows[4])
    del broken["subgroup"]
    rows[4] = json.dumps(broken)
    (root / "meta.jsonl").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"meta.jsonl:5.*label_columns names 'subgroup'"):
        _module(root, tmp_path / "again")


@pytest.mark.integration
def test_reference_network_learns_what_the_labels_show_and_is_cached(tmp_path):
    root = _labelled_set(tmp_path / "data", {"train": 60, "test": 10})
    dm = _module(root, tmp_path)
    logs: list[str] = []
    net = reference.load_or_train(dm, ["group", "subgroup"], tmp_path / "cache", log=logs.append, recipe=QUICK)
    assert any("training on 220 training images" in line for line in logs)
    test = dm.datasets["test"]
    images = torch.stack([test.load_image(i) for i in range(test.num_images)])
    targets = net.targets({c: [r.labels[c] for r in test.records] for c in ("group", "subgroup")})
    read = reference.read(net, images)
    assert read["ref_feat"].shape == (40, reference.FEATURES) and read["ref_pred"].shape == (40, 2)
    scores = reference.label_scores(read, read, targets)
    assert scores["labels/group"] >= 0.9 and scores["labels/subgroup"] >= 0.8, scores
    assert net.train_features.shape == (220, reference.FEATURES)  # val is drawn from train

    logs.clear()
    again = reference.load_or_train(dm, ["group", "subgroup"], tmp_path / "cache", log=logs.append, recipe=QUICK)
    assert not logs  # loaded, not trained
    assert torch.equal(again.train_features, net.train_features) and again.classes == net.classes
    assert len(list((tmp_path / "cache" / "reference_net").glob("*.safetensors"))) == 1

    relabelled = dm.datasets["train"].records[0]
    assert reference.digest(dm, ["group", "subgroup"], {**reference.TRAIN, **QUICK}) == net.digest
    relabelled.labels = {**relabelled.labels, "subgroup": "blue"}
    assert reference.digest(dm, ["group", "subgroup"], {**reference.TRAIN, **QUICK}) != net.digest  # other labels: another network


def test_metrics_without_label_columns_name_the_key(tmp_path):
    from lightning_modules.metrics import Readers, resolve

    root = _labelled_set(tmp_path / "data", {"train": 2})
    dm = FolderDataModule(root=str(root), manifest="meta.jsonl", image_size=16, cache_dir=str(tmp_path / "c"))
    with pytest.raises(MetricsError, match="data.label_columns"):
        Readers(resolve(["reference"]), cache_dir=tmp_path / "c", datamodule=dm)


@pytest.mark.integration
def test_evaluate_defaults_on_labelled_real_data_report_fd_precision_recall_labels_and_memorisation(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from conftest import CONF, compose_train
    from lightning_modules.evaluation import evaluate
    from lightning_modules.training import run_training

    root = _labelled_set(tmp_path / "data", {"train": 12, "test": 3}, image_size=32)
    run = tmp_path / "run"
    run_training(compose_train(run, ["data=folder", f"data.root={root}", "data.manifest=meta.jsonl",
                                     "data.label_columns=[group,subgroup]", "data.group_by=shape",
                                     "data.image_size=32", f"paths.cache_dir={tmp_path / 'cache'}",
                                     "trainer.max_steps=2", "trainer.val_check_interval=1",
                                     "callbacks.sample_metrics={_target_:lightning_modules.callbacks.SampleMetrics,"
                                     f"num_samples:8,batch_size:8,cache_dir:'{tmp_path / 'cache'}',"
                                     f"dirpath:'{run / 'checkpoints'}'}}"]))
    trained = json.loads((run / "checkpoints" / "best.json").read_text())
    assert "metrics/reference/fd" in json.dumps(trained)  # the callback's default on labelled real data
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "num_samples=64",
                                             "batch_size=8", "device=cpu", f"cache_dir={tmp_path / 'cache'}",
                                             f"out_dir={tmp_path / 'eval'}"])
    report = evaluate(cfg)
    values = report["metrics"]
    for key in ("reference/fd", "reference/precision", "reference/recall", "labels/group", "labels/group_real",
                "labels/subgroup", "labels/subgroup_real", "memorisation/nn_distance",
                "memorisation/nn_distance_real", "memorisation/nn_ratio"):
        assert np.isfinite(values[key]), key
    assert values["labels/group_real"] >= 0.75  # the ceiling: real test images of seen colours
    assert report["protocol"]["samples"] == 12 and report["protocol"]["reference"]["columns"] == {
        "group": 2, "subgroup": 4}
    assert set(report["protocol"]["metrics"]) == {"reference", "labels", "memorisation"}
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"] == values


@pytest.mark.integration
@pytest.mark.skipif(not (EMOJI64 / "meta.jsonl").is_file(), reason=f"emoji64 is not at {EMOJI64} (GAN_GA_EMOJI64)")
def test_the_reference_network_reads_emoji64_on_a_small_subset(tmp_path):
    dm = FolderDataModule(root=str(EMOJI64), manifest="meta.jsonl", group_by="emoji",
                          label_columns=["group", "subgroup"], image_size=64, cache_dir=str(tmp_path / "cache"),
                          verify_images=False)
    dm.setup("fit")
    train = dm.datasets["train"]
    train.records = train.records[:: 40]  # ~140 drawings: the network trains in seconds
    net = reference.load_or_train(dm, ["group", "subgroup"], tmp_path / "cache", log=lambda _: None,
                                  recipe={"epochs": 2})
    assert len(net.classes["group"]) >= 8
    test = dm.datasets["test"]
    picks = range(0, test.num_images, 20)
    read = reference.read(net, torch.stack([test.load_image(i) for i in picks]))
    assert read["ref_feat"].shape[1] == reference.FEATURES and torch.isfinite(read["ref_feat"]).all()
    targets = net.targets({c: [test.records[i].labels[c] for i in picks] for c in ("group", "subgroup")})
    assert set(targets) == {"group", "subgroup"} and (targets["group"] >= 0).all()
