"""Streaming shards (issue 12): written from a real source, read back as the same batches."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

import caption_layouts as layouts
import zygote
from conftest import ROOT, compose_train

pytest.importorskip("litdata")

SIZE = ["data.image_size=32", "data.batch_size=4", "data.num_workers=0", "data.persistent_workers=false"]


def _folder_source(root: Path, n: int = 22) -> Path:
    """A folder data set with enough images for several batches (plus the layout's quirks)."""
    layouts.folder(root)
    for i in range(n):
        layouts.write_image(root / "more" / f"extra_{i}.png", "rgb", seed=100 + i)
        (root / "more" / f"extra_{i}.txt").write_text(f"extra picture number {i}\nanother caption {i}\n")
    return root


def _datamodule(tmp_path: Path, overrides: list[str]):
    from lightning_modules.loading import build

    cfg = compose_train(tmp_path / "run", [*overrides, *SIZE])
    datamodule = build(cfg.data)
    datamodule.setup("fit")
    return datamodule


def _make_shards(tmp_path: Path, source: Path) -> tuple[Path, object]:
    from datamodules.shards import write_shards

    folder = _datamodule(tmp_path, ["data=folder", f"data.root={source}"])
    out = tmp_path / "shards"
    write_shards(folder, out, source={"data": {"_target_": "datamodules.folder.FolderDataModule"}}, chunk_bytes="4kb")
    return out, folder


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, object, Path]:
    """(shards folder, the folder source's data module, a scratch folder): written once."""
    tmp = tmp_path_factory.mktemp("shards")
    out, folder = _make_shards(tmp, _folder_source(tmp / "data"))
    return out, folder, tmp


def _batches(loader) -> list[tuple[torch.Tensor, list[str]]]:
    return [(b["image"], list(b["caption"])) for b in loader]


@pytest.mark.integration
def test_shards_give_the_folder_sources_batches_and_skip_counts(written, tmp_path):
    out, folder, _ = written
    assert len(list((out / "images").glob("chunk-*.bin"))) > 1  # several shards
    shards = _datamodule(tmp_path, ["data=shards", f"data.input_dir={out}"])
    assert shards.skips.counts() == folder.skips.counts() and sum(folder.skips.counts().values()) > 0
    for split in ("train", "val"):
        loader = getattr(folder, f"{split}_dataloader")
        mine = getattr(shards, f"{split}_dataloader")
        expected, got = _batches(loader()), _batches(mine())
        assert len(expected) == len(got) > 0
        for (e_img, e_cap), (g_img, g_cap) in zip(expected, got):
            assert e_cap == g_cap
            torch.testing.assert_close(e_img, g_img, rtol=0, atol=0)
    assert shards.all_captions() == folder.all_captions()  # so the text cache is shared too


def test_a_resumed_run_reads_the_next_unseen_batch(written, tmp_path):
    out = written[0]
    shards = _datamodule(tmp_path, ["data=shards", f"data.input_dir={out}"])
    full = _batches(shards.train_dataloader())
    position = {"batches": 2}
    from datamodules.captions import OneCaptionPerImageSampler

    dataset = shards.datasets["train"]
    sampler = OneCaptionPerImageSampler(dataset, shuffle=True, fixed=False, seed=shards.seed, drop_last=True,
                                        position=lambda: position["batches"], batch_size=shards.batch_size,
                                        tag_epoch=True)
    loader = torch.utils.data.DataLoader(dataset, batch_size=shards.batch_size, sampler=sampler, drop_last=True)
    resumed = _batches(loader)
    assert [c for _, c in resumed] == [c for _, c in full[2:]]
    torch.testing.assert_close(resumed[0][0], full[2][0], rtol=0, atol=0)


def _rank_share(fabric, input_dir: str, run_dir: str) -> list[str]:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"_target_": "datamodules.shards.ShardsDataModule", "input_dir": input_dir,
                            "image_size": 32, "batch_size": 4, "num_workers": 0, "cache_text": False,
                            "persistent_workers": False, "cache_dir": run_dir})
    datamodule = instantiate(cfg)
    datamodule.setup("fit")
    return [c for batch in datamodule.train_dataloader() for c in batch["caption"]]


@pytest.mark.integration
def test_two_ddp_ranks_read_disjoint_equal_shares(written, tmp_path):
    from process_group import run_on_processes

    out, folder, _ = written
    outcomes = run_on_processes(_rank_share, str(out), str(tmp_path / "cache"), world=2, timeout=180)
    assert sorted(outcomes) == [0, 1] and all(status == "ok" for status, _ in outcomes.values()), outcomes
    first, second = outcomes[0][1], outcomes[1][1]
    assert len(first) == len(second) > 0
    assert not set(first) & set(second)
    assert len(first) + len(second) <= folder.datasets["train"].num_images


def test_a_missing_or_damaged_shard_is_named(written, tmp_path):
    import shutil

    from datamodules.captions import DataError

    out = tmp_path / "copy"
    shutil.copytree(written[0], out)
    chunks = sorted((out / "images").glob("chunk-*.bin"))
    data = chunks[1].read_bytes()
    chunks[1].write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=rf"{chunks[1].name}: damaged shard"):
        _datamodule(tmp_path, ["data=shards", f"data.input_dir={out}"])
    chunks[1].unlink()
    with pytest.raises(DataError, match=rf"{chunks[1].name}: missing shard"):
        _datamodule(tmp_path, ["data=shards", f"data.input_dir={out}"])
    (out / "manifest.json").unlink()
    with pytest.raises(DataError, match="no manifest.json"):
        _datamodule(tmp_path, ["data=shards", f"data.input_dir={out}"])


@pytest.mark.integration
def test_make_shards_cli_then_train_on_them(tmp_path):
    source = _folder_source(tmp_path / "data")
    out = tmp_path / "cli_shards"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = zygote.run([sys.executable, "-m", "datamodules.make_shards", "data=folder", f"data.root={source}",
                         f"out={out}", f"hydra.run.dir={tmp_path}/make"], cwd=ROOT, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "wrote shards to" in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["train"]["images"] > 0 and manifest["skipped"]["missing_images"] == 1
    again = zygote.run([sys.executable, "-m", "datamodules.make_shards", "data=folder", f"data.root={source}",
                        f"out={out}", f"hydra.run.dir={tmp_path}/make2"], cwd=ROOT, env=env, timeout=300)
    assert again.returncode == 2 and "already holds shards" in again.stderr
    from lightning_modules.training import run_training

    cfg = compose_train(tmp_path / "train", ["data=shards", f"data.input_dir={out}", *SIZE,
                                             "trainer.fast_dev_run=true"])
    run_training(cfg)


@pytest.mark.integration
def test_an_image_that_does_not_decode_from_its_shard_gives_the_next_sample(tmp_path):
    """A damaged image in the chunks (here: corrupt when written) is replaced by the next record's
    image and caption, and counted; JPEGs are decoded at a reduced scale from the chunks too."""
    import warnings

    from PIL import Image

    from datamodules.shards import write_shards

    source = tmp_path / "data"
    for i in range(6):
        layouts.write_image(source / f"p{i}.jpg", "rgb", seed=i).with_suffix(".txt").write_text(f"picture {i}\n")
    Image.new("RGB", (1600, 1200), (90, 120, 200)).save(source / "large.jpg", quality=90)
    (source / "large.txt").write_text("a large photo\n")
    folder = _datamodule(tmp_path, ["data=folder", f"data.root={source}", "data.split_fractions.val=0"])
    train = folder.datasets["train"]
    bad = next(k for k, r in enumerate(train.records) if r.path.name.startswith("p"))
    train.records[bad].path.write_bytes(b"no longer an image")  # after the start-up scan
    out = tmp_path / "shards"
    write_shards(folder, out, source={"data": {"_target_": "datamodules.folder.FolderDataModule"}}, chunk_bytes="4kb")
    shards = _datamodule(tmp_path, ["data=shards", f"data.input_dir={out}"]).datasets["train"]
    nxt = shards.records[(bad + 1) % shards.num_images]
    with pytest.warns(UserWarning, match=f"item {bad}"):
        item = shards[(int(shards.first_caption[bad]), 0)]
    assert item["skipped"] == 1 and item["caption"] == nxt.captions[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert sum(shards[int(j)]["skipped"] for j in shards.first_caption) == 1
    large = next(k for k, r in enumerate(shards.records) if r.captions == ["a large photo"])
    assert shards.read_image(large)[0].size == (200, 150)  # 1/8 of 1600x1200: still >= 38 pixels
