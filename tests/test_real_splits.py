"""Real data with its own split: split folders, a manifest's split column, validation drawn by group
(data.group_by), the split stated in the report, and bad split data named. Small data made here;
one test reads the real emoji64 when it is on this machine."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.captions import DataError, seeded_split
from datamodules.folder import FolderDataModule
from gan_ga_utils.errors import ConfigError

EMOJI64 = Path(os.environ.get("GAN_GA_EMOJI64", Path(__file__).resolve().parents[2] / "shared" / "data" / "emoji64"))
VENDORS = ("noto", "twemoji", "fluent")
SPLITS = ("train", "val", "test")


def _png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(8, 8, 4), dtype=np.uint8)
    Image.fromarray(pixels, "RGBA").save(path)
    return path


def _split_folders(root: Path, groups: dict[str, int]) -> None:
    """``root/SPLIT/gNN_VENDOR.png`` + ``.txt`` (two captions), ``groups[SPLIT]`` emoji per split."""
    k = 0
    for split, n in groups.items():
        for g in range(n):
            for vendor in VENDORS:
                image = _png(root / split / f"{split[:2]}{g:02d}_{vendor}.png", k)
                image.with_suffix(".txt").write_text(f"emoji {split} {g}\nemoji {g} by {vendor}\n")
                k += 1


def _meta(root: Path, splits: dict[str, int], **changes) -> Path:
    """A meta.jsonl in emoji64's format; ``changes``: {row number: {key: value}} as ``r3={...}``."""
    lines = []
    for split, n in splits.items():
        for g in range(n):
            emoji = f"{split}-{g}"
            for vendor in VENDORS:
                number = len(lines) + 1
                row = {"file": f"{split}/{emoji}_{vendor}.png", "emoji": emoji, "hexcode": emoji.upper(),
                       "name": f"face {emoji}", "vendor": vendor, "group": "smileys", "subgroup": "face",
                       "split": split, "captions": [f"face {emoji}", f"an emoji of face {emoji}",
                                                    f"face {emoji} in the {vendor} style"]}
                row.update(changes.get(f"r{number}", {}))
                _png(root / row["file"], number)
                lines.append(json.dumps(row))
    path = root / "meta.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _read(root: Path, tmp_path: Path, **kwargs) -> tuple[FolderDataModule, dict]:
    dm = FolderDataModule(root=str(root), cache_dir=str(tmp_path / "cache"), report_dir=str(tmp_path / "report"),
                          **kwargs)
    dm.setup("fit")
    return dm, json.loads((tmp_path / "report" / "data_report.json").read_text())


def _paths(dm: FolderDataModule, split: str) -> set[Path]:
    return {r.path for r in dm.datasets[split].records}


def _groups(dm: FolderDataModule, split: str) -> set[str]:
    return {r.group for r in dm.datasets[split].records}


def _no_group_in_two_splits(dm: FolderDataModule) -> None:
    """(Without a test split the test split is the validation split: that pair is not compared.)"""
    test_is_val = dm.datasets["test"].records is dm.datasets["val"].records
    for a, b in (("train", "val"), ("train", "test"), *(() if test_is_val else (("val", "test"),))):
        assert not _groups(dm, a) & _groups(dm, b), (a, b)


def test_split_folders_are_honoured_and_val_is_drawn_from_train_by_group(tmp_path):
    root = tmp_path / "data"
    _split_folders(root, {"train": 20, "test": 3})
    _png(root / "loose.png", 99)  # outside the split folders: ignored, and said so
    dm, report = _read(root, tmp_path, group_by="stem_prefix", split_fractions={"val": 0.1, "test": 0.0})
    test_files = {p for p in (root / "test").glob("*.png")}
    assert _paths(dm, "test") == test_files
    assert not (_paths(dm, "train") | _paths(dm, "val")) & test_files
    assert _paths(dm, "train") | _paths(dm, "val") == set((root / "train").glob("*.png"))
    _no_group_in_two_splits(dm)
    assert report["split_source"] == ("split folders (train, test), 1 images outside them ignored (e.g. loose.png); "
                                      "val seeded by group 'stem_prefix' from train")
    assert report["groups"] == {"train": 18, "val": 2, "test": 3}
    assert report["images"] == {"train": 54, "val": 6, "test": 9}
    assert report["captions"] == {"train": 108, "val": 12, "test": 18}

    root = tmp_path / "with_val"  # a val/ folder is the validation split: nothing is drawn
    _split_folders(root, {"train": 4, "val": 2, "test": 2})
    dm, report = _read(root, tmp_path)
    assert {s: _paths(dm, s) for s in SPLITS} == {s: set((root / s).glob("*.png")) for s in SPLITS}
    assert report["split_source"] == "split folders (train, val, test)"
    assert report["groups"] == {"train": 12, "val": 6, "test": 6}  # group_by=null: each image is its own group


def test_group_by_keeps_groups_whole_and_is_seeded(tmp_path):
    root = tmp_path / "data"  # no split folders: everything is drawn, seeded
    _split_folders(root / "all", {"train": 30})
    splits = {}
    for seed in (0, 0, 1):
        dm, report = _read(root, tmp_path, group_by="stem_prefix", split_seed=seed,
                           split_fractions={"val": 0.2, "test": 0.1})
        _no_group_in_two_splits(dm)
        members = [r.group for s in SPLITS for r in dm.datasets[s].records]
        assert all(members.count(g) == 3 for g in members)  # every drawing of a group, in its one split
        assert report["groups"] == {"train": 21, "val": 6, "test": 3}
        assert report["split_source"] == "seeded by group 'stem_prefix'"
        splits.setdefault(seed, []).append({s: _paths(dm, s) for s in SPLITS})
    assert splits[0][0] == splits[0][1] and splits[0][0] != splits[1][0]

    manifest = _meta(tmp_path / "m", {"train": 20})  # a manifest column, no split column
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    manifest.write_text("".join(json.dumps({k: v for k, v in row.items() if k != "split"}) + "\n" for row in rows))
    dm, report = _read(tmp_path / "m", tmp_path, manifest="meta.jsonl", group_by="emoji",
                       split_fractions={"val": 0.25, "test": 0.0})
    _no_group_in_two_splits(dm)
    assert report["split_source"] == "seeded by group 'emoji'; test = val (no test split)"
    assert report["groups"] == {"train": 15, "val": 5, "test": 5}


def test_without_group_by_the_seeded_split_is_by_image_as_before():
    """group_by=null draws exactly what the by-image split drew before groups existed."""
    from datamodules.captions import ImageCaptions

    records = [ImageCaptions(Path(f"/x/{i}.png"), [f"c{i}"]) for i in range(50)]
    order = np.random.default_rng(3).permutation(50)  # the earlier code, inlined
    before = [records[i] for i in order]
    assert seeded_split(records, {"val": 0.1, "test": 0.2}, 3) == {
        "val": before[:5], "test": before[5:15], "train": before[15:]}


def test_manifest_split_column_is_honoured_and_every_caption_kept(tmp_path):
    root = tmp_path / "data"
    _meta(root, {"train": 6, "val": 2, "test": 2})
    dm, report = _read(root, tmp_path, manifest="meta.jsonl", group_by="emoji")
    for split in SPLITS:
        assert _paths(dm, split) == set((root / split).glob("*.png"))
        assert _groups(dm, split) == {f"{split}-{g}" for g in range({"train": 6, "val": 2, "test": 2}[split])}
    record = next(r for r in dm.datasets["train"].records if r.path.name == "train-0_twemoji.png")
    assert record.captions == ["face train-0", "an emoji of face train-0", "face train-0 in the twemoji style"]
    assert report["split_source"] == "manifest split column"
    assert report["images"] == {"train": 18, "val": 6, "test": 6}
    assert report["captions"] == {"train": 54, "val": 18, "test": 18}
    assert report["groups"] == {"train": 6, "val": 2, "test": 2}

    _meta(root, {"train": 6, "val": 2, "test": 2}, r1={"emoji": "test-0"})  # the data's split shares a group
    with pytest.warns(UserWarning, match=r"data.group_by='emoji': 1 groups are in two splits as manifest split column "
                                         r"gives them \(e.g. test-0\)"):
        _read(root, tmp_path, manifest="meta.jsonl", group_by="emoji")

    csv = root / "meta.csv"  # a CSV's split column too, its image column named "file"
    csv.write_text("file,caption,split\n" + "".join(f"{p.relative_to(root)},a face,{s}\n"
                                                    for s in SPLITS for p in sorted((root / s).glob("*.png"))))
    dm, report = _read(root, tmp_path, manifest="meta.csv")
    assert {s: _paths(dm, s) for s in SPLITS} == {s: set((root / s).glob("*.png")) for s in SPLITS}
    assert report["groups"] == report["images"]  # by image


def test_bad_split_data_is_named_with_its_fix(tmp_path):
    root = tmp_path / "data"
    manifest = _meta(root, {"train": 2, "test": 1}, r3={"split": "valid"})
    with pytest.raises(DataError, match=r"meta\.jsonl:3: split='valid' is not one of train, val, test: correct"):
        _read(root, tmp_path, manifest="meta.jsonl")
    _meta(root, {"train": 2, "test": 1})
    with pytest.raises(DataError) as err:
        _read(root, tmp_path, manifest="meta.jsonl", group_by="emojii")
    assert f"data.manifest={manifest}:1: data.group_by='emojii'" in str(err.value)
    assert "fields: file, emoji, hexcode" in str(err.value) and "data.group_by=null" in str(err.value)

    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join([*lines[:4], json.dumps({k: v for k, v in json.loads(lines[4]).items()
                                                           if k != "split"}), *lines[5:]]) + "\n")
    with pytest.raises(DataError, match=r"meta\.jsonl:5.*has none: give every row a split"):
        _read(root, tmp_path, manifest="meta.jsonl")
    manifest.write_text("\n".join([*lines, lines[0].replace('"split": "train"', '"split": "test"')]) + "\n")
    with pytest.raises(DataError, match=r"meta\.jsonl:10: train-0_noto\.png has split 'test', but meta\.jsonl:1 gives"):
        _read(root, tmp_path, manifest="meta.jsonl")

    with pytest.raises(ConfigError, match="data.group_by='emoji': names a manifest column, but data.manifest is not"):
        FolderDataModule(root=str(root), group_by="emoji")
    with pytest.raises(ConfigError, match="data.group_by=''"):
        FolderDataModule(root=str(root), manifest="meta.jsonl", group_by="")


@pytest.mark.integration
def test_training_runs_on_split_folders_grouped_by_stem_prefix(tmp_path):
    """The config composes with the new keys and trains in process (fast_dev_run)."""
    from conftest import compose_train
    from lightning_modules.training import run_training

    _split_folders(tmp_path / "data", {"train": 6, "test": 2})
    run = tmp_path / "run"
    run_training(compose_train(run, [
        "data=folder", f"data.root={tmp_path / 'data'}", "data.group_by=stem_prefix", "encoder=tiny",
        "trainer.fast_dev_run=true", "trainer.accelerator=cpu", "data.num_workers=0", "data.batch_size=4",
        "data.image_size=32", "model.generator.base_channels=8", "model.discriminator.base_channels=8",
        "model.samples_per_prompt=2", "callbacks.progress_bar=null", f"paths.cache_dir={tmp_path / 'cache'}"]))
    report = json.loads((run / "data_report.json").read_text())
    assert report["split_source"] == "split folders (train, test); val seeded by group 'stem_prefix' from train"
    assert report["groups"] == {"train": 5, "val": 1, "test": 2}


@pytest.mark.skipif(not (EMOJI64 / "meta.jsonl").is_file(), reason=f"emoji64 is not at {EMOJI64} (GAN_GA_EMOJI64)")
def test_emoji64_splits_by_emoji_through_its_meta_jsonl(tmp_path):
    dm, report = _read(EMOJI64, tmp_path, manifest="meta.jsonl", group_by="emoji", verify_images=False,
                       max_val_images=None)
    _no_group_in_two_splits(dm)
    assert len(_groups(dm, "train") | _groups(dm, "val")) == 1487 and len(_groups(dm, "test")) == 165
    assert report["split_source"] == "manifest split column; val seeded by group 'emoji' from train"
    assert sum(report["images"].values()) == 6520 and report["images"]["test"] == 653
    assert all(len(r.captions) >= 3 for s in SPLITS for r in dm.datasets[s].records)


@pytest.mark.parametrize("experiment", ["emoji64", "emoji64_gpu"])
def test_the_emoji64_experiments_read_its_own_split_by_emoji_without_flips(tmp_path, experiment):
    from conftest import compose_train
    from lightning_modules.config_checks import validate

    cfg = compose_train(tmp_path, ["data=folder", f"experiment={experiment}", f"data.root={tmp_path}"])
    assert cfg.data.manifest == "meta.jsonl" and cfg.data.group_by == "emoji" and cfg.data.hflip is False
    assert cfg.data.image_size == 64
    assert list(cfg.data.label_columns) == ["group", "subgroup"]  # the reference network's classes
    assert (cfg.trainer.max_time == "00:00:21:00") == (experiment == "emoji64")  # the CPU run stops by the clock
    if experiment == "emoji64":
        validate(cfg)  # the GPU one asks for a GPU this machine may not have


def test_without_the_data_the_emoji64_preset_names_its_folder_and_how_to_build_it(tmp_path, monkeypatch):
    from hydra.utils import instantiate

    from conftest import compose_train

    monkeypatch.delenv("GAN_GA_EMOJI64", raising=False)
    monkeypatch.chdir(tmp_path)  # no data/emoji64 here
    cfg = compose_train(tmp_path, ["data=folder", "experiment=emoji64"])
    assert cfg.data.root == "data/emoji64"  # the product's own folder, never ../shared
    with pytest.raises(Exception, match=r"(?s)data.root: data/emoji64 does not exist.*python tools/build_emoji64.py"):
        instantiate(cfg.data)  # (Hydra wraps the DataError; train.py prints its message alone)


def test_a_seeded_split_is_the_data_sets_not_the_runs(tmp_path):
    """Two runs of other seeds draw the same validation emoji (data.split_seed), so they train on
    the same images and are scored by the same reference network; data.split_seed draws another."""
    _meta(tmp_path / "data", {"train": 12, "test": 2})
    kwargs = dict(manifest="meta.jsonl", group_by="emoji", split_fractions={"val": 0.25, "test": 0.0})
    runs = [_read(tmp_path / "data", tmp_path / f"r{seed}", seed=seed, **kwargs)[0] for seed in (0, 1)]
    assert _groups(runs[0], "val") == _groups(runs[1], "val")
    other = _read(tmp_path / "data", tmp_path / "other", seed=0, split_seed=5, **kwargs)[0]
    assert _groups(other, "val") != _groups(runs[0], "val")
