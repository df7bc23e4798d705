"""Real caption data sets: every layout read from real files, quirks counted exactly, trained via train.py."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import caption_layouts as layouts
from conftest import run_script
from datamodules.captions import (
    CaptionedImageDataset,
    DataError,
    ImageCaptions,
    OneCaptionPerImageSampler,
    clean_caption,
    open_rgb,
    resize_crop,
)
from datamodules.coco import CocoDataModule
from datamodules.cub import CubDataModule
from datamodules.flickr8k import Flickr8kDataModule
from datamodules.folder import FolderDataModule
from gan_ga_utils.errors import ConfigError

TRAIN_FAST = ["encoder=tiny", "trainer.fast_dev_run=true", "trainer.accelerator=cpu", "data.num_workers=0",
              "data.batch_size=4", "data.image_size=32", "model.generator.base_channels=8",
              "model.discriminator.base_channels=8", "model.samples_per_prompt=2", "callbacks.progress_bar=null"]


def _layout(name: str, root: Path) -> tuple[list[str], dict[str, int]]:
    """(data overrides, expected skip counts) for one layout written under ``root``."""
    if name == "flickr8k_kaggle":
        return ["data=flickr8k"], layouts.flickr8k_kaggle(root)
    if name == "flickr8k_original":
        return ["data=flickr8k"], layouts.flickr8k_original(root)
    if name == "flickr8k_karpathy":
        return ["data=flickr8k", "data.split_source=karpathy"], layouts.flickr8k_karpathy(root)
    if name == "coco2014":
        return ["data=coco", "data.year=2014"], layouts.coco(root, 2014)
    if name == "coco2017":
        return ["data=coco"], layouts.coco(root, 2017)
    if name == "cub":
        return ["data=cub"], layouts.cub(root)
    if name == "folder":
        return ["data=folder"], layouts.folder(root)
    if name in ("manifest_jsonl", "manifest_csv"):
        path, expect = layouts.manifest(root, name.split("_")[1])
        return ["data=folder", f"data.manifest={path}"], expect
    raise ValueError(name)


LAYOUTS = ("flickr8k_kaggle", "flickr8k_original", "flickr8k_karpathy", "coco2014", "coco2017", "cub", "folder",
           "manifest_jsonl", "manifest_csv")


@pytest.mark.integration
@pytest.mark.parametrize("layout", LAYOUTS)
def test_training_runs_on_each_layout(tmp_path, layout):
    """Each layout through the training entry point in this process (the command line's own path is
    tested once, below)."""
    from conftest import compose_train
    from lightning_modules.training import run_training

    overrides, expect = _layout(layout, tmp_path / "data")
    run = tmp_path / "run"
    run_training(compose_train(run, [*overrides, f"data.root={tmp_path / 'data'}", *TRAIN_FAST,
                                     f"paths.cache_dir={tmp_path / 'cache'}"]))
    report = json.loads((run / "data_report.json").read_text())
    assert report["skipped"] == expect
    assert all(report["images"][split] > 0 for split in ("train", "val"))


@pytest.mark.integration
def test_train_py_fast_dev_run_reads_a_folder_and_logs_what_it_skipped(tmp_path):
    overrides, expect = _layout("folder", tmp_path / "data")
    run = tmp_path / "run"
    result = run_script("train.py", *overrides, f"data.root={tmp_path / 'data'}", *TRAIN_FAST,
                        f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((run / "data_report.json").read_text())
    assert report["skipped"] == expect
    log = (run / "train.log").read_text()
    assert f"data: {report['dataset']}" in log and "skipped" in log
    assert "`Trainer.fit` stopped" in log


def test_flickr8k_layouts_read_the_right_splits_and_captions(tmp_path):
    layouts.flickr8k_original(tmp_path / "orig")
    dm = Flickr8kDataModule(root=str(tmp_path / "orig"), image_size=32, num_workers=0, cache_dir=str(tmp_path / "c"))
    dm.setup("fit")
    # official split files: 8/2/2 names, of which the truncated image (number 8) is in dev
    assert [dm.datasets[s].num_images for s in ("train", "val", "test")] == [8, 1, 2]
    assert dm.layout == "original release, official split"
    assert all(len(r.captions) == 5 for d in dm.datasets.values() for r in d.records)
    captions = set(dm.datasets["train"].captions)
    assert 'A "quoted" caption with commas, and more , words' in captions  # CSV quoting undone, commas kept
    assert "Un café près de la mer — naïve façade" in captions  # non-ASCII kept, blanks stripped
    assert "two children play in the sand" in captions  # tabs and runs of spaces collapsed

    layouts.flickr8k_karpathy(tmp_path / "karpathy")
    dm = Flickr8kDataModule(root=str(tmp_path / "karpathy"), split_source="karpathy", image_size=32,
                            cache_dir=str(tmp_path / "c"))
    dm.setup("fit")
    assert [dm.datasets[s].num_images for s in ("train", "val", "test")] == [8, 1, 2]  # restval joins train


def test_coco_keeps_every_caption_and_cub_splits_by_class(tmp_path):
    layouts.coco(tmp_path / "coco")
    dm = CocoDataModule(root=str(tmp_path / "coco"), image_size=32, cache_dir=str(tmp_path / "c"))
    dm.setup("fit")
    counts = sorted({len(r.captions) for r in dm.datasets["train"].records})
    assert counts == [5, 6, 7]

    layouts.cub(tmp_path / "cub")
    dm = CubDataModule(root=str(tmp_path / "cub"), image_size=32, cache_dir=str(tmp_path / "c"))
    dm.setup("fit")
    assert {r.path.parent.name for r in dm.datasets["val"].records} == {"001.Black_footed_Albatross"}
    assert {r.path.parent.name for r in dm.datasets["train"].records} == {"002.Laysan_Albatross", "003.Sooty_Albatross"}
    assert all(len(r.captions) == 10 and r.bbox == (5.0, 4.0, 20.0, 18.0) for r in dm.datasets["train"].records)


def test_every_image_mode_becomes_rgb(tmp_path):
    for kind in ("rgb", "gray", "cmyk", "rgba_png", "palette_png"):
        path = layouts.write_image(tmp_path / f"x_{kind}.{'png' if 'png' in kind else 'jpg'}", kind)
        image = open_rgb(path)
        assert image.mode == "RGB" and image.size == (40, 30), kind
        pixels = resize_crop(image, 16)
        assert pixels.shape == (3, 16, 16) and -1 <= pixels.min() and pixels.max() <= 1
    # alpha goes over white: a fully transparent pixel reads white, not black
    clear = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    clear.save(tmp_path / "clear.png")
    assert np.asarray(open_rgb(tmp_path / "clear.png")).min() == 255
    # 16-bit greyscale is scaled, not clipped
    Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)).save(tmp_path / "deep.png")
    assert np.asarray(open_rgb(tmp_path / "deep.png")).min() == 255


def test_clean_caption():
    assert clean_caption("  a\r\nb \t c  ") == "a b c"
    assert clean_caption("word " * 100, max_chars=22) == "word word word word"
    assert clean_caption("   ") == ""


def _dataset(counts: list[int]) -> CaptionedImageDataset:
    records = [ImageCaptions(Path(f"/x/{i}.jpg"), [f"image {i} caption {k}" for k in range(n)])
               for i, n in enumerate(counts)]
    return CaptionedImageDataset(records, image_size=32, train=True)


def test_sampler_one_caption_per_image_per_epoch_and_all_captions_over_time():
    ds = _dataset([5, 3, 7, 1, 5, 5])
    sampler = OneCaptionPerImageSampler(ds, shuffle=True, fixed=False, seed=0)
    seen: dict[int, set[int]] = {i: set() for i in range(ds.num_images)}
    orders = []
    for epoch in range(7):
        sampler.set_epoch(epoch)
        picks = list(sampler)
        images = [int(ds.image_of[j]) for j in picks]
        assert sorted(images) == list(range(ds.num_images))  # each image exactly once per epoch
        for j in picks:
            seen[int(ds.image_of[j])].add(j)
        orders.append(images)
    assert all(len(seen[i]) == n for i, n in enumerate([5, 3, 7, 1, 5, 5]))  # every caption used
    assert orders[0] != orders[1]  # reshuffled each epoch
    val = OneCaptionPerImageSampler(ds, shuffle=False, fixed=True)
    for epoch in range(3):
        val.set_epoch(epoch)
        assert list(val) == [int(f) for f in ds.first_caption]  # fixed caption, fixed order


def test_sampler_gives_each_rank_different_images():
    ds = _dataset([2] * 11)
    shares = []
    for rank in range(3):
        sampler = OneCaptionPerImageSampler(ds, shuffle=True, fixed=False, seed=1, num_replicas=3, rank=rank,
                                            drop_last=True)
        sampler.set_epoch(2)
        shares.append([int(ds.image_of[j]) for j in sampler])
        assert len(shares[-1]) == len(sampler) == 3
    flat = [i for share in shares for i in share]
    assert len(set(flat)) == len(flat) == 9


def test_loader_uses_worker_processes_and_distinct_captions(tmp_path):
    layouts.folder(tmp_path / "f")
    dm = FolderDataModule(root=str(tmp_path / "f"), image_size=32, batch_size=2, num_workers=2, cache_text=False,
                          cache_dir=str(tmp_path / "c"), split_fractions={"val": 0.2, "test": 0.0})
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.persistent_workers and loader.num_workers == 2
    batches = list(loader)
    captions = Counter(c for b in batches for c in b["caption"])
    assert sum(captions.values()) == 2 * (dm.datasets["train"].num_images // 2)
    assert all(b["image"].shape == (2, 3, 32, 32) for b in batches)


@pytest.mark.parametrize("module, kwargs, path_part", [
    (Flickr8kDataModule, {}, "captions.txt"),
    (CocoDataModule, {"year": 2014}, "captions_train2014.json"),
    (CubDataModule, {}, "images"),
    (FolderDataModule, {"manifest": "nope.jsonl"}, "nope.jsonl"),
])
def test_missing_files_name_the_path(tmp_path, module, kwargs, path_part):
    (tmp_path / "root" / "Images").mkdir(parents=True)
    dm = module(root=str(tmp_path / "root"), cache_dir=str(tmp_path / "c"), **kwargs)
    with pytest.raises(DataError) as err:
        dm.setup("fit")
    assert path_part in str(err.value) and str(tmp_path / "root") in str(err.value)
    with pytest.raises(DataError, match=f"data.root: {tmp_path / 'gone'} does not exist"):
        module(root=str(tmp_path / "gone"), **kwargs)


@pytest.mark.integration
def test_cli_missing_annotation_file_is_one_line(tmp_path):
    (tmp_path / "coco" / "train2017").mkdir(parents=True)
    result = run_script("train.py", "data=coco", f"data.root={tmp_path / 'coco'}", *TRAIN_FAST,
                        f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"gan-ga: data.root: {tmp_path / 'coco' / 'annotations' / 'captions_train2017.json'} does not exist. "
        + CocoDataModule.where()]


@pytest.mark.integration
def test_cli_missing_root_is_one_line(tmp_path):
    result = run_script("train.py", "data=coco", f"data.root={tmp_path / 'nowhere'}", *TRAIN_FAST,
                        f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()
    assert len(message) == 1 and str(tmp_path / "nowhere") in message[0] and "cocodataset.org" in message[0]


def test_nothing_usable_is_a_clear_error(tmp_path):
    root = tmp_path / "f"
    layouts.write_image(root / "a.jpg", "truncated").with_suffix(".txt").write_text("a caption\n")
    dm = FolderDataModule(root=str(root), cache_dir=str(tmp_path / "c"))
    with pytest.raises(DataError, match="no usable training images.*1 unreadable images"):
        dm.setup("fit")


def test_image_scan_is_cached(tmp_path):
    layouts.flickr8k_kaggle(tmp_path / "k")
    dm = Flickr8kDataModule(root=str(tmp_path / "k"), cache_dir=str(tmp_path / "c"))
    dm.setup("fit")
    scans = list((tmp_path / "c" / "image_scan").glob("*.json"))
    assert len(scans) == 1 and json.loads(scans[0].read_text())["unreadable"][0].endswith("1008_img.jpg")
    torch.manual_seed(0)


@pytest.mark.integration
def test_ddp_ranks_train_on_different_images(tmp_path):
    layouts.folder(tmp_path / "data")
    result = run_script(
        "train.py", "data=folder", f"data.root={tmp_path / 'data'}", "data.split_fractions.val=0.2",
        *[o for o in TRAIN_FAST if o != "trainer.fast_dev_run=true"], "data.batch_size=2", "trainer.devices=2",
        "trainer.max_steps=4", "trainer.limit_val_batches=0", f"paths.cache_dir={tmp_path / 'cache'}",
        "+callbacks.record._target_=caption_layouts.RecordCaptionIds", f"+callbacks.record.out_dir={tmp_path}",
        f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, timeout=400, pythonpath=(Path(__file__).parent,))
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"caption_ids_rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["sampler"] == "OneCaptionPerImageSampler" for r in ranks)  # Lightning kept our sampler
    from datamodules.folder import FolderDataModule as F

    dm = F(root=str(tmp_path / "data"), split_fractions={"val": 0.2}, cache_dir=str(tmp_path / "cache"))
    dm.setup("fit")
    train = dm.datasets["train"]
    images = [{int(train.image_of[i]) for i in r["ids"]} for r in ranks]
    assert len(ranks[0]["ids"]) == len(ranks[1]["ids"]) == 4
    assert len(images[0]) == len(images[1]) == 4 and not images[0] & images[1]


# -- unreadable samples at run time, caption files, large images

def _captioned_folder(root: Path, n: int, kind: str = "rgb") -> Path:
    """``n`` images with a one-line caption each: ``img_I.jpg`` + ``img_I.txt`` ("picture I")."""
    for i in range(n):
        layouts.write_image(root / f"img_{i}.jpg", kind, seed=i).with_suffix(".txt").write_text(f"picture {i}\n")
    return root


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    import io
    import tarfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _tar_with_one_corrupt_member(root: Path, n: int) -> Path:
    """A WebDataset tar of ``n`` readable samples plus one whose image does not decode."""
    members = []
    for i in range(n):
        image = layouts.write_image(root.parent / "images" / f"{i}.jpg", "rgb", seed=i)
        members += [(f"{i:06d}.jpg", image.read_bytes()), (f"{i:06d}.txt", f"sample number {i}".encode())]
    members += [(f"{n:06d}.jpg", b"these bytes are not a JPEG"), (f"{n:06d}.txt", b"the corrupt sample")]
    return _tar(root / "00000.tar", members)


def test_an_image_gone_after_the_scan_gives_the_next_records_image_and_caption(tmp_path):
    root = _captioned_folder(tmp_path / "f", 4)
    dm = FolderDataModule(root=str(root), image_size=32, num_workers=0, cache_text=False,
                          cache_dir=str(tmp_path / "c"), split_fractions={"val": 0.0, "test": 0.0})
    dm.setup("fit")
    records = dm.datasets["train"].records
    train = CaptionedImageDataset(records, image_size=32, train=False, caption_offset=dm.datasets["train"].caption_offset)
    expected = [train[int(train.first_caption[i])] for i in range(train.num_images)]
    train.records[1].path.unlink()
    with pytest.warns(UserWarning, match="img_"):
        item = train[int(train.first_caption[1])]
    assert item["caption"] == expected[2]["caption"] == train.records[2].captions[0]  # the pair stays a pair
    torch.testing.assert_close(item["image"], expected[2]["image"], rtol=0, atol=0)
    assert dm.all_captions()[item["caption_id"]] == item["caption"]
    assert item["skipped"] == 1 and all(e["skipped"] == 0 for e in expected)
    with pytest.warns(UserWarning):  # the data module's own training split: the same fallback
        assert dm.datasets["train"][(int(train.first_caption[1]), 0)]["caption"] == records[2].captions[0]
    for record in train.records[2:] + train.records[:1]:
        record.path.unlink()
    with pytest.raises(DataError, match="every image of this split is unreadable.*img_.*verify_images"):
        train[0]


def test_a_long_run_of_unreadable_records_stops_with_their_names(tmp_path):
    image = layouts.write_image(tmp_path / "kept.jpg", "rgb")
    records = [ImageCaptions(tmp_path / f"gone_{i}.jpg", [f"gone {i}"]) for i in range(40)]
    records.append(ImageCaptions(image, ["kept"]))
    dataset = CaptionedImageDataset(records, image_size=16, train=False)
    with pytest.raises(DataError, match=r"32 images in a row are unreadable \(.*gone_0\.jpg"):
        dataset[0]
    item = dataset[20]  # 20 records passed over: within the limit
    assert item["caption"] == "kept" and item["skipped"] == 20


def test_blank_and_non_utf8_caption_files_are_counted_and_named(tmp_path):
    root = _captioned_folder(tmp_path / "f", 3)
    (root / "img_0.txt").write_bytes(b"\r\n   \n\t\n")
    (root / "img_1.txt").write_bytes("un café crème près du lac\n".encode("latin-1"))
    dm = FolderDataModule(root=str(root), image_size=32, cache_dir=str(tmp_path / "c"))
    dm.setup("fit")
    counts = dm.skips.counts()
    assert counts["empty_captions"] == 1 and dm.skips.examples["empty_captions"] == ["img_0.txt (only blank lines)"]
    assert counts["captions_not_utf8"] == 1 and "img_1.txt" in dm.skips.examples["captions_not_utf8"][0]
    assert "un café crème près du lac" in dm.all_captions()  # decoded, not U+FFFD
    assert not any("\ufffd" in c for c in dm.all_captions())


def _photo(path: Path, size: tuple[int, int], fmt: str = "JPEG") -> Path:
    """A smooth picture (gradients): decoding at a reduced scale changes its pixels very little."""
    w, h = size
    x, y = np.meshgrid(np.linspace(0, 255, w), np.linspace(0, 255, h))
    pixels = np.stack([x, y, 255 - (x + y) / 2], axis=-1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, fmt, quality=95)
    return path


def test_large_jpegs_are_decoded_at_a_reduced_scale_in_every_reader(tmp_path):
    from datamodules.captions import decode
    from datamodules.tars import WebDatasetDataModule

    big = _photo(tmp_path / "f" / "big.jpg", (2400, 1800))
    big.with_suffix(".txt").write_text("a big photo\n")
    image, scale = decode(big, need=38)
    assert image.size == (300, 225) and scale == 1 / 8  # 1/8 is the smallest scale still >= 38 pixels
    assert decode(big, need=400)[0].size == (600, 450)  # 1/4: 1/8 would be too small
    _captioned_folder(tmp_path / "f", 3)
    folder = FolderDataModule(root=str(tmp_path / "f"), image_size=32, cache_dir=str(tmp_path / "c"),
                              split_fractions={"val": 0.0, "test": 0.0})
    folder.setup("fit")
    members = [(p.name, p.read_bytes()) for p in sorted((tmp_path / "f").iterdir())]
    _tar(tmp_path / "t" / "0.tar", members)
    tars = WebDatasetDataModule(root=str(tmp_path / "t"), image_size=32, cache_dir=str(tmp_path / "c"),
                                split_fractions={"val": 0.0, "test": 0.0})
    tars.setup("fit")
    for dm in (folder, tars):
        train = dm.datasets["train"]
        k = next(i for i, r in enumerate(train.records) if r.captions == ["a big photo"])
        assert train.read_image(k)[0].size == (300, 225), dm.name
        assert train[int(train.first_caption[k])]["image"].shape == (3, 32, 32)


def test_a_box_crop_is_the_same_region_when_decoded_at_a_reduced_scale(tmp_path):
    path = _photo(tmp_path / "bird.jpg", (2000, 1600))
    record = ImageCaptions(path, ["a bird"], bbox=(900.0, 500.0, 300.0, 200.0))
    dataset = CaptionedImageDataset([record], image_size=32, train=False)
    drafted = dataset.load_image(0)
    whole = dataset.prepare(open_rgb(path), record, None)
    assert (drafted - whole).abs().mean() < 0.02  # the box was scaled with the image


def test_non_jpeg_images_above_the_pixel_limit_are_skipped_and_counted(tmp_path):
    root = _captioned_folder(tmp_path / "f", 3)
    _photo(root / "huge.png", (300, 200), "PNG").with_suffix(".txt").write_text("a huge png\n")
    dm = FolderDataModule(root=str(root), image_size=32, cache_dir=str(tmp_path / "c"), max_image_pixels=50_000)
    dm.setup("fit")
    assert dm.skips.counts()["oversized_images"] == 1 and dm.skips.examples["oversized_images"] == ["huge.png"]
    assert "a huge png" not in dm.all_captions()
    with pytest.raises(ConfigError, match="data.max_image_pixels=0: must be >= 1"):
        FolderDataModule(root=str(root), max_image_pixels=0)
    with pytest.raises(ConfigError, match="data.max_skipped_fraction=1.5: must be >= 0 and <= 1"):
        FolderDataModule(root=str(root), max_skipped_fraction=1.5)


TAR_TRAIN = ["data=webdataset", "data.split_fractions.val=0", "data.batch_size=3", "data.image_size=32",
             "trainer.max_epochs=3", "trainer.max_steps=-1", "trainer.limit_val_batches=0", "logger=csv",
             "callbacks.model_checkpoint.every_n_batches=0"]


@pytest.mark.integration
def test_a_tar_with_one_corrupt_member_trains_3_epochs_with_one_runtime_skip_per_epoch(tmp_path):
    import csv

    from conftest import compose_train
    from lightning_modules.training import run_training

    root = tmp_path / "tars"
    _tar_with_one_corrupt_member(root, 8)  # 9 samples: 3 batches of 3, every sample read every epoch
    run = tmp_path / "run"
    run_training(compose_train(run, [*TAR_TRAIN, f"data.root={root}", "data.max_skipped_fraction=0.2",
                                     f"paths.cache_dir={tmp_path / 'cache'}"]))
    with (run / "csv" / "metrics.csv").open() as f:
        logged = [float(row["data/skipped_runtime"]) for row in csv.DictReader(f) if row.get("data/skipped_runtime")]
    assert logged == [1.0, 1.0, 1.0]
    report = json.loads((run / "data_report.json").read_text())
    assert report["images_checked"].startswith("when read")
    assert report["skipped_runtime"] == {"total": 3, "epochs": [{"epoch": e, "skipped": 1, "samples": 9}
                                                                for e in range(3)]}


@pytest.mark.integration
def test_too_many_runtime_skips_stop_training_with_one_line_and_no_damaged_checkpoint(tmp_path):
    root = tmp_path / "tars"
    _tar_with_one_corrupt_member(root, 8)
    run = tmp_path / "run"
    fast = [o for o in TRAIN_FAST if o != "trainer.fast_dev_run=true"]
    result = run_script("train.py", *fast, *TAR_TRAIN, f"data.root={root}", f"paths.cache_dir={tmp_path / 'cache'}",
                        f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("gan-ga: training epoch 0: 1 of 9 samples had an unreadable image")
    assert "data.max_skipped_fraction=0.01" in last
    assert json.loads((run / "data_report.json").read_text())["skipped_runtime"]["total"] == 1
    written = sorted((run / "checkpoints").glob("*")) if (run / "checkpoints").is_dir() else []
    assert all(p.suffix == ".ckpt" for p in written), written  # no half-written temporary file left behind
    for ckpt in written:
        assert torch.load(ckpt, weights_only=True, map_location="cpu")["state_dict"]
