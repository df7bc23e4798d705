"""What every image-caption data set shares: records, clean-up, skip accounting, image loading,
one-caption-per-image sampling and the DataModule that feeds the GAN.

A reader (``flickr8k.py``, ``coco.py``, ``cub.py``, ``folder.py``) only turns files into rows of
``(image path, caption, where)``; :func:`group_rows` and :class:`CaptionDataModule` do the rest the
same way for all of them:

* rows naming an image that does not exist, malformed rows and captions empty after clean-up are
  skipped and counted (:class:`SkipCounts`);
* caption files are read as UTF-8; a file that is not (Latin-1 / Windows-1252 exports) is decoded as
  Windows-1252 (Latin-1 where that fails), and counted and named as ``captions_not_utf8``; a
  caption file holding only blank lines counts as an empty caption of its image;
* every image is decoded once before training (:func:`find_unreadable`, cached per file list), so
  truncated or corrupt files are skipped and counted rather than crashing a worker hours later;
* large images: a JPEG is always decoded at the smallest of PIL's reduced scales (1/2, 1/4, 1/8,
  :func:`decode`) that still covers the size training needs, so a 90-megapixel photo costs about
  what a 1.5-megapixel one does; formats that cannot be decoded at a reduced scale (PNG, WebP, ...)
  with more than ``data.max_image_pixels`` pixels are skipped and counted as ``oversized_images``
  (by the start-up scan; when read, where there is no scan);
* grayscale, CMYK, palette, 16-bit and alpha images become RGB (alpha over white), EXIF rotation is
  applied, then resize + crop to ``image_size``;
* each epoch visits every image once with one of its captions; an image's captions take turns
  across epochs (all are used), validation always uses the first.

Runtime fallback, the same for every reader (files, tar shards, litdata shards): an image that
cannot be read when an item is made (changed on disk after the scan, a damaged tar member or shard)
is replaced by the next record's image *and* caption (``caption_id`` and cached text features
follow the caption), and the item says so: ``skipped`` is the number of records passed over to make
it (0 normally), collated into every batch. More than :data:`MAX_UNREADABLE_IN_A_ROW` unreadable
records in a row (or every record of a small split) raise :class:`DataError` naming them. The
training side (``lightning_modules/callbacks.py: RuntimeSkips``) sums ``skipped`` per training epoch,
logs it as ``data/skipped_runtime`` and hands it to :meth:`CaptionDataModule.note_runtime_skips`,
which adds it to ``data_report.json`` (key ``skipped_runtime``: the total and one entry per epoch;
``skipped`` keeps the start-up counts) and stops training with a :class:`DataError` once an
epoch's share of skipped samples passes ``data.max_skipped_fraction``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import unicodedata
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset

from datamodules.resumable import ResumableDataModule, ResumableSampler
from datamodules.text_cache import DTYPES
from gan_ga_utils.checks import Problems, check
from gan_ga_utils.errors import DataError
from gan_ga_utils.files import write_text

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
SPLIT_NAMES = ("train", "val", "test")
MAX_UNREADABLE_IN_A_ROW = 32  # unreadable records passed over for one item before the run stops


def missing(path: Path, key: str, where: str) -> DataError:
    return DataError(f"{key}: {path} does not exist. {where}")


# ---------------------------------------------------------------------------- records and counts
@dataclass
class ImageCaptions:
    """One image and all of its captions (``bbox``: x, y, w, h of the object to crop to, CUB;
    ``group``: what keeps images together in one split, e.g. the emoji drawn; None: the image alone;
    ``labels``: the values of ``data.label_columns`` the reference network classifies)."""

    path: Path
    captions: list[str]
    bbox: tuple[float, float, float, float] | None = None
    group: str | None = None
    labels: dict[str, str] | None = None


@dataclass
class SkipCounts:
    """What was left out, and why. ``examples`` keeps a few of each for the report."""

    rows_missing_image: int = 0  # caption rows naming an image file that does not exist
    missing_images: int = 0  # distinct image files those rows name
    rows_malformed: int = 0  # lines / records that could not be parsed
    empty_captions: int = 0  # captions empty after clean-up
    unreadable_images: int = 0  # files that exist but do not decode (truncated, corrupt, not images)
    images_without_captions: int = 0  # image files no caption names (folder and CUB layouts)
    unreadable_tars: int = 0  # tar shards that cannot be opened (data=webdataset)
    oversized_images: int = 0  # non-JPEG images above data.max_image_pixels (JPEGs are decoded at a reduced scale)
    captions_not_utf8: int = 0  # caption files that are not UTF-8, decoded as Windows-1252 / Latin-1 (kept)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def note(self, reason: str, example: str, n: int = 1) -> None:
        setattr(self, reason, getattr(self, reason) + n)
        shown = self.examples.setdefault(reason, [])
        if len(shown) < 3:
            shown.append(example)

    def counts(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if k != "examples"}

    def summary(self) -> str:
        parts = [f"{v} {k.replace('_', ' ')}" for k, v in self.counts().items() if v]
        if not parts:
            return "skipped nothing"
        lines = ["skipped " + ", ".join(parts)]
        lines += [f"  {k.replace('_', ' ')}: {', '.join(v)}" for k, v in self.examples.items()]
        return "\n".join(lines)


_SPACE = re.compile(r"\s+")


def decode_text(data: bytes, where: str, skips: SkipCounts | None = None) -> str:
    """A caption file's bytes as text: UTF-8 (a BOM dropped). Anything else is decoded as
    Windows-1252 (Latin-1 for the few bytes it leaves undefined), and counted and named in ``skips``
    as ``captions_not_utf8``, never turned silently into replacement characters."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        try:
            text, used = data.decode("cp1252"), "Windows-1252"
        except UnicodeDecodeError:
            text, used = data.decode("latin-1"), "Latin-1"
        if skips is not None:
            skips.note("captions_not_utf8", f"{where} (byte {err.start} is not UTF-8; decoded as {used})")
        return text


def clean_caption(text: str, max_chars: int = 300) -> str:
    """NFC unicode, whitespace runs (CR, LF, tabs) -> one space, stripped, cut at a word boundary."""
    text = _SPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()
    if len(text) > max_chars:
        cut = text[:max_chars]
        text = cut.rsplit(" ", 1)[0] if " " in cut else cut
    return text


def group_rows(rows: Iterable[tuple[Path, str, str]], skips: SkipCounts, max_chars: int = 300) -> list[ImageCaptions]:
    """``(image path, raw caption, where)`` rows -> one record per existing image, first-seen order."""
    records: dict[Path, ImageCaptions] = {}
    absent: set[Path] = set()
    exists: dict[Path, bool] = {}
    for path, raw, where in rows:
        if path not in exists:
            exists[path] = path.is_file()
        if not exists[path]:
            if path not in absent:
                absent.add(path)
                skips.missing_images += 1
            skips.note("rows_missing_image", f"{where} ({path.name})")
            continue
        text = clean_caption(raw, max_chars)
        if not text:
            skips.note("empty_captions", where)
            continue
        records.setdefault(path, ImageCaptions(path, [])).captions.append(text)
    return list(records.values())


def seeded_split(records: list[ImageCaptions], fractions: dict[str, float], seed: int) -> dict[str, list[ImageCaptions]]:
    """Split by group (a record's ``group``; by image where it has none), never by caption, reproducibly.
    ``fractions``: val and test, as shares of the groups; train is the rest. No group is in two splits."""
    groups: dict = {}
    for i, record in enumerate(records):
        groups.setdefault(("image", i) if record.group is None else record.group, []).append(record)
    members = list(groups.values())
    order = np.random.default_rng(seed).permutation(len(members))
    n_val = int(round(len(members) * float(fractions.get("val", 0.0))))
    n_test = int(round(len(members) * float(fractions.get("test", 0.0))))
    if len(members) >= 3:  # a split asked for gets at least one group when there are enough
        n_val = max(n_val, 1) if fractions.get("val") else 0
        n_test = max(n_test, 1) if fractions.get("test") else 0
    val, test, train = ([r for i in part for r in members[i]]
                         for part in (order[:n_val], order[n_val : n_val + n_test], order[n_val + n_test :]))
    return {"val": val, "test": test, "train": train}


def group_count(records: Iterable[ImageCaptions]) -> int:
    """How many groups these records hold (an image without a group is its own)."""
    return len({r.path if r.group is None else ("group", r.group) for r in records})


# ---------------------------------------------------------------------------- images
def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB: alpha over white, 16/32-bit grey scaled to 8 bits, CMYK/P/L converted."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    if image.mode.startswith("I") or image.mode == "F":
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(pixels.max()), 1.0)
        return Image.fromarray(np.clip(pixels / top * 255.0, 0, 255).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


class ImageTooLarge(ValueError):
    """An image that cannot be decoded at a reduced scale has more than ``data.max_image_pixels`` pixels."""


def bbox_box(bbox: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    """A square around the object, 1.5x its larger side, clipped to the image (the CUB convention)."""
    x, y, w, h = bbox
    r = int(max(w, h) * 0.75)
    cx, cy = int(x + w / 2), int(y + h / 2)
    return max(cx - r, 0), max(cy - r, 0), min(cx + r, width), min(cy + r, height)


def decode(source, need: int | None = None, bbox: tuple[float, float, float, float] | None = None,
           max_pixels: int | None = None) -> tuple[Image.Image, float]:
    """An image file (a path or a binary file object) decoded as RGB, and its scale: pixels of the
    result per pixel of the file (to scale a ``bbox`` given in the file's pixels).

    A JPEG is decoded at the smallest of PIL's reduced scales (1/2, 1/4, 1/8) whose shorter side (of
    the ``bbox`` crop, when given) still has ``need`` pixels; any other format is decoded whole, and
    one with more than ``max_pixels`` pixels raises :class:`ImageTooLarge` before it is decoded."""
    with Image.open(source) as image:
        width, height = image.size
        if image.format == "JPEG":
            if need:
                left, top, right, bottom = bbox_box(bbox, width, height) if bbox else (0, 0, width, height)
                factor = min(need / max(min(right - left, bottom - top), 1), 1.0)
                image.draft("RGB", (max(1, math.ceil(width * factor)), max(1, math.ceil(height * factor))))
        elif max_pixels and width * height > max_pixels:
            raise ImageTooLarge(f"{width}x{height} pixels, more than data.max_image_pixels={max_pixels}")
        image.load()
        return to_rgb(image), image.size[0] / width


def open_rgb(path: Path, draft_size: int | None = None) -> Image.Image:
    return decode(path, need=draft_size)[0]


def _scan(path: Path, max_pixels: int | None) -> str | None:
    """Why an image is left out (a :class:`SkipCounts` reason), or None when it decodes."""
    try:
        decode(path, need=64, max_pixels=max_pixels)
    except ImageTooLarge:
        return "oversized_images"
    except Exception:  # noqa: BLE001 - truncated, corrupt, not an image, decompression bomb: all unreadable
        return "unreadable_images"
    return None


def find_unreadable(paths: Sequence[Path], cache_dir: Path | None, workers: int | None = None,
                    max_pixels: int | None = None) -> dict[Path, str]:
    """Decode every image once: the ones left out, each with its reason (``unreadable_images`` or
    ``oversized_images``). The answer is cached per (path, size, mtime) list and pixel limit."""
    fingerprint = hashlib.sha256(f"max_pixels={max_pixels}\n".encode())
    for p in paths:
        st = p.stat()
        fingerprint.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    cache = Path(cache_dir) / "image_scan" / f"{fingerprint.hexdigest()[:24]}.json" if cache_dir else None
    if cache is not None and cache.is_file():
        try:
            record = json.loads(cache.read_text())
            return {**{Path(p): "unreadable_images" for p in record["unreadable"]},
                    **{Path(p): "oversized_images" for p in record["oversized"]}}
        except (ValueError, KeyError):
            pass  # a damaged scan record: scan again
    with ThreadPoolExecutor(max_workers=workers or min(16, os.cpu_count() or 1)) as pool:
        found = {p: why for p, why in zip(paths, pool.map(lambda p: _scan(p, max_pixels), paths)) if why}
    if cache is not None:
        listed = {why: sorted(str(p) for p, w in found.items() if w == why)
                  for why in ("unreadable_images", "oversized_images")}
        write_text(cache, json.dumps({"images": len(paths), "max_pixels": max_pixels,
                                      "unreadable": listed["unreadable_images"],
                                      "oversized": listed["oversized_images"]}))
    return found


def bbox_crop(image: Image.Image, bbox: tuple[float, float, float, float]) -> Image.Image:
    """The :func:`bbox_box` crop of an image."""
    return image.crop(bbox_box(bbox, image.width, image.height))


def resize_crop(image: Image.Image, size: int, *, scale: float = 1.0, random_crop: bool = False,
                flip: bool = False, rng: np.random.Generator | None = None) -> torch.Tensor:
    """Shorter side -> ``size * scale`` (antialiased), crop ``size``x``size`` (random or centred),
    optional random horizontal flip; returns [3, size, size] in [-1, 1]. The random crop and flip
    draw from ``rng`` (the training set passes one seeded by (seed, epoch, caption), so a resumed
    run draws the same crops), else from torch's global RNG."""
    short = max(size, round(size * scale))
    w, h = image.size
    factor = short / min(w, h)
    image = image.resize((max(short, round(w * factor)), max(short, round(h * factor))), Image.BICUBIC)
    w, h = image.size
    if random_crop:
        if rng is not None:
            left, top = int(rng.integers(0, w - size + 1)), int(rng.integers(0, h - size + 1))
        else:
            left, top = int(torch.randint(0, w - size + 1, ())), int(torch.randint(0, h - size + 1, ()))
    else:
        left, top = (w - size) // 2, (h - size) // 2
    image = image.crop((left, top, left + size, top + size))
    if flip and bool((rng.random() if rng is not None else float(torch.rand(()))) < 0.5):
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
    return pixels.float() / 127.5 - 1.0


# ---------------------------------------------------------------------------- dataset and sampler
class CaptionedImageDataset(Dataset):
    """Indexed by *caption*: ``dataset[j]`` is caption ``j`` with its image. The sampler decides
    which caption of each image an epoch uses. ``caption_offset`` places this split's captions in the
    data module's global caption list (the text cache's row numbers).

    A reader that keeps its images elsewhere (tars, shards) overrides :meth:`read_image` (and
    :meth:`describe`, :attr:`unreadable_fix`); the fallback of :meth:`load` is shared."""

    # what to do when images cannot be read any more (shown in the error of :meth:`load`)
    unreadable_fix = ("they changed or went away after the start-up scan: restore them, or start the run again "
                      "so that the scan (data.verify_images=true) leaves them out")

    def __init__(self, records: list[ImageCaptions], *, image_size: int, train: bool, random_crop: bool = True,
                 crop_scale: float = 1.0, hflip: bool = False, caption_offset: int = 0, seed: int = 0,
                 max_pixels: int | None = None):
        self.records, self.seed = records, seed
        self.image_size, self.train = image_size, train
        self.random_crop, self.crop_scale, self.hflip = random_crop, crop_scale, hflip
        self.caption_offset = caption_offset
        self.max_pixels = max_pixels
        # the shorter side resize_crop scales to: JPEGs are decoded at the smallest scale that covers it
        self.decode_size = max(image_size, round(image_size * crop_scale)) if train and random_crop else image_size
        counts = np.array([len(r.captions) for r in records], dtype=np.int64)
        self.caption_counts = counts
        self.first_caption = np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(counts) else counts
        self.image_of = np.repeat(np.arange(len(records)), counts)
        self.captions = [c for r in records for c in r.captions]
        self.text_cache = None  # set by the data module when features are cached

    @property
    def num_images(self) -> int:
        return len(self.records)

    def __len__(self) -> int:
        return len(self.captions)

    def read_image(self, index: int) -> tuple[Image.Image, float]:
        """Record ``index``'s image, decoded (:func:`decode`), and its scale; raises when unreadable."""
        record = self.records[index]
        return decode(record.path, self.decode_size, record.bbox, self.max_pixels)

    def describe(self, index: int) -> str:
        """Record ``index``'s image as an error message names it."""
        return str(self.records[index].path)

    def load(self, index: int, rng: np.random.Generator | None = None) -> tuple[torch.Tensor, int, int]:
        """(image tensor, the record it is of, records passed over): record ``index``'s image or, when
        that cannot be read, the next readable record's. Past :data:`MAX_UNREADABLE_IN_A_ROW`
        unreadable records in a row (or all of them) a :class:`DataError` names them."""
        n = len(self.records)
        failed = []
        for passed in range(min(MAX_UNREADABLE_IN_A_ROW, n)):
            k = (index + passed) % n
            try:
                image, scale = self.read_image(k)
            except Exception as err:  # noqa: BLE001 - whatever the reason, the record is unreadable now
                failed.append(f"{self.describe(k)} ({type(err).__name__}: {err})")
                continue
            if failed:
                warnings.warn(f"unreadable, the next record is used instead: {'; '.join(failed)}", stacklevel=2)
            return self.prepare(image, self.records[k], rng, scale), k, passed
        which = "every image of this split is" if len(failed) == n else f"{len(failed)} images in a row are"
        shown = "; ".join(failed[:3]) + (f"; and {len(failed) - 3} more" if len(failed) > 3 else "")
        raise DataError(f"{which} unreadable ({shown}): {self.unreadable_fix}")

    def load_image(self, index: int, rng: np.random.Generator | None = None) -> torch.Tensor:
        """The image tensor of record ``index``, or of the next readable record (:meth:`load`)."""
        return self.load(index, rng)[0]

    def prepare(self, image: Image.Image, record: ImageCaptions, rng: np.random.Generator | None,
                scale: float = 1.0) -> torch.Tensor:
        """A decoded RGB image -> this split's tensor: the record's box (if any, in the file's pixels:
        ``scale`` maps them to the decoded image's), then resize, crop and flip (random only when
        training). Every image (files, shards, tars) ends here."""
        if record.bbox is not None:
            image = bbox_crop(image, tuple(v * scale for v in record.bbox))
        train = self.train
        return resize_crop(image, self.image_size, scale=self.crop_scale if train and self.random_crop else 1.0,
                           random_crop=train and self.random_crop, flip=train and self.hflip, rng=rng)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """``dataset[j]``, or ``dataset[(j, epoch)]`` (the training sampler's form): crops and flips
        then come from (seed, epoch, j), the same in a resumed run. When caption ``j``'s image cannot
        be read, the item is the next readable record's image with that record's caption (the same
        turn of its captions), and ``skipped`` counts the records passed over."""
        j, epoch = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), None)
        rng = np.random.default_rng([self.seed, epoch, j]) if epoch is not None else None
        asked = int(self.image_of[j])
        image, got, skipped = self.load(asked, rng)
        if got != asked:
            turn = j - int(self.first_caption[asked])
            j = int(self.first_caption[got]) + turn % int(self.caption_counts[got])
        item = {"image": image, "caption": self.captions[j], "caption_id": self.caption_offset + j,
                "skipped": skipped}
        if self.text_cache is not None:
            item.update(self.text_cache.item(self.caption_offset + j))
        return item


class OneCaptionPerImageSampler(ResumableSampler):
    """Yields caption indices: every image once per epoch (shuffled when training), with caption
    ``(start_i + epoch) mod n_i`` so an image's captions take turns; ``fixed`` always uses caption 0.

    Under DDP each rank takes its own slice (a ``DistributedSampler``, so Lightning keeps it and
    calls ``set_epoch``); the last partial share is padded (or dropped with ``drop_last``). With
    ``tag_epoch`` it yields ``(caption, data epoch)`` pairs, which seed the crops. A
    resumed run continues where it stopped (:class:`~datamodules.resumable.ResumableSampler`)."""

    def __init__(self, dataset: CaptionedImageDataset, *, shuffle: bool, fixed: bool, seed: int = 0,
                 drop_last: bool = False, num_replicas: int | None = None, rank: int | None = None,
                 position=None, batch_size: int = 1, tag_epoch: bool = False):
        super().__init__(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last, num_replicas=num_replicas, rank=rank,
                         position=position, batch_size=batch_size)
        self.fixed, self.tag_epoch = fixed, tag_epoch
        n, world = dataset.num_images, self.num_replicas
        self.num_samples = n // world if drop_last else math.ceil(n / world)
        self.total_size = self.num_samples * world
        start = np.random.default_rng([seed, 7]).integers(0, 1 << 30, size=n)
        self._start = start % np.maximum(dataset.caption_counts, 1)

    def indices(self) -> list[int]:
        ds: CaptionedImageDataset = self.dataset
        n = ds.num_images
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(n)
        else:
            order = np.arange(n)
        if self.fixed:
            pick = ds.first_caption[order]
        else:
            pick = ds.first_caption[order] + (self._start[order] + self.epoch) % ds.caption_counts[order]
        pick = pick.tolist()
        if len(pick) < self.total_size:  # pad by wrapping around
            pick += (pick * math.ceil(self.total_size / max(len(pick), 1)))[: self.total_size - len(pick)]
        mine = pick[self.rank : self.total_size : self.num_replicas]
        return [(j, self.epoch) for j in mine] if self.tag_epoch else mine

    def __len__(self) -> int:
        return self.num_samples


# ---------------------------------------------------------------------------- data module
class CaptionDataModule(ResumableDataModule):
    """Shared DataModule of the real data sets; a subclass implements :meth:`read`.

    With a frozen text encoder handed over by :meth:`use_text_encoder` (the run's own, built once:
    ``lightning_modules/training.py``) and ``cache_text``, every caption is encoded once before
    training (``text_cache.py``) and batches carry ``text_tokens``, ``text_mask`` and
    ``text_pooled``: the encoder does not run in the training step.
    """

    name = "captions"

    def __init__(
        self,
        *,
        root: str | None = None,
        name: str | None = None,
        image_size: int = 64,
        batch_size: int = 32,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        random_crop: bool = True,
        crop_scale: float = 1.1875,
        hflip: bool = True,
        max_caption_chars: int = 300,
        verify_images: bool = True,
        max_image_pixels: int | None = 40_000_000,
        max_skipped_fraction: float = 0.01,
        cache_dir: str | None = None,
        cache_text: bool = True,
        cache_dtype: str = "float16",
        cache_batch_size: int = 256,
        report_dir: str | None = None,
        max_val_images: int | None = 1024,
        augment_policy: Sequence[str] = (),
        sample_prompts: Sequence[str] = (),
        seed: int = 0,
        split_seed: int = 0,
    ):
        super().__init__()
        check(type(self), {k: v for k, v in locals().items() if k not in ("self", "__class__")}, "data")
        self.name = name or self.name
        if root is None or str(root) in ("", "???"):
            raise DataError(f"data.root is not set: pass data.root=PATH (the {self.name} folder). {self.where()}")
        self.root = Path(str(root)).expanduser()
        if not self.root.is_dir():
            raise missing(self.root, "data.root", self.where())
        self.image_size, self.batch_size, self.num_workers = image_size, batch_size, num_workers
        self.pin_memory, self.persistent_workers = pin_memory, persistent_workers
        self.random_crop, self.crop_scale, self.hflip = random_crop, crop_scale, hflip
        self.max_caption_chars, self.verify_images = max_caption_chars, verify_images
        self.max_image_pixels, self.max_skipped_fraction = max_image_pixels, max_skipped_fraction
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.cache_text, self.cache_dtype, self.cache_batch_size = cache_text, cache_dtype, cache_batch_size
        self.report_dir = Path(report_dir) if report_dir else None
        self.max_val_images = max_val_images
        # augment_policy: read by the model from the config (model.augment.policy: ${oc.select:data...}); checked here
        self.sample_prompts = list(sample_prompts)
        self.seed = seed  # the run's: the training order, crops and flips
        self.split_seed = split_seed  # the data set's: a seeded split is the same whatever the run's seed
        self.datasets: dict[str, CaptionedImageDataset] = {}
        self.skips = SkipCounts()
        self.layout = ""
        self.split_origin = ""  # where the split came from, for the report (set by a reader that knows)
        self.groups: dict[str, int] = {}  # groups per split (data.group_by; an image alone without one)
        self.text_cache = None
        self.text_encoder = None  # use_text_encoder
        self.runtime_skips: dict = {"total": 0, "epochs": []}  # see note_runtime_skips

    @classmethod
    def config_problems(cls, values, key: str = "data") -> list[str]:
        """What is wrong with these constructor values (see ``gan_ga_utils/checks.py``)."""
        p = Problems(values, key)
        p.number("batch_size", 2, integer=True)  # mismatched pairs need a second caption
        p.number("num_workers", 0, integer=True)
        p.number("crop_scale", 1)
        p.number("max_caption_chars", 1, integer=True)
        p.number("max_image_pixels", 1, integer=True)
        p.number("max_skipped_fraction", 0, 1)
        p.number("cache_batch_size", 1, integer=True)
        p.number("split_seed", 0, 2**32 - 1, integer=True)
        p.choice("cache_dtype", DTYPES)
        policy = values.get("augment_policy")
        if policy is not None:  # the names are checked by the augmentation that follows it (model.augment.policy)
            p.need(isinstance(policy, str) or all(isinstance(n, str) for n in policy), "augment_policy",
                   "a list of policy names, e.g. data.augment_policy=[translation,cutout]; [] turns it off")
        fractions = values.get("split_fractions")
        if fractions is not None:
            ok = all(isinstance(v, (int, float)) and 0 <= v < 1 for v in fractions.values()) and sum(fractions.values()) < 1
            p.need(ok, "split_fractions", "val and test fractions in [0, 1) that sum to less than 1 (train gets the rest)")
        return p

    # -- what a subclass provides
    @classmethod
    def where(cls) -> str:
        """Where the data set comes from (shown in errors)."""
        return ""

    def read(self, skips: SkipCounts) -> dict[str, list[ImageCaptions]]:
        """Read the files under ``self.root`` into records per split; count what is skipped."""
        raise NotImplementedError

    # -- shared
    def setup(self, stage: str | None = None) -> None:
        """Read the files once (train.py calls this before building the model, so bad data fails
        fast); once a Trainer is attached, the skipped counts also go to its loggers."""
        if not self.datasets:
            self._read()
        self._log_skips()

    def _read(self) -> None:
        skips = SkipCounts()
        splits = self.read(skips)
        if self.verify_images:
            every = [r.path for records in splits.values() for r in records]
            bad = find_unreadable(sorted(set(every)), self.cache_dir, max_pixels=self.max_image_pixels)
            for path, reason in sorted(bad.items()):
                skips.note(reason, str(path.relative_to(self.root) if path.is_relative_to(self.root) else path))
            splits = {k: [r for r in v if r.path not in bad] for k, v in splits.items()}
        if not splits.get("train"):
            raise DataError(f"data.root={self.root}: no usable training images ({self.layout or 'no layout'}; "
                            f"{skips.summary()}). {self.where()}")
        if not splits.get("val"):
            splits["val"] = splits["train"][: max(1, min(len(splits["train"]) // 20, 256))]
        if self.max_val_images:
            splits["val"] = splits["val"][: self.max_val_images]
        if not splits.get("test"):
            splits["test"] = splits["val"]
            self.split_origin += "; test = val (no test split)" if self.split_origin else ""
        self.groups = {split: group_count(splits[split]) for split in SPLIT_NAMES}
        offset = 0
        for split in SPLIT_NAMES:
            train = split == "train"
            self.datasets[split] = self.make_dataset(
                split, splits[split], image_size=self.image_size, train=train, random_crop=self.random_crop,
                crop_scale=self.crop_scale, hflip=self.hflip, caption_offset=offset, seed=self.seed,
                max_pixels=self.max_image_pixels)
            offset += len(self.datasets[split])
        self.skips = skips
        self._report()

    def make_dataset(self, split: str, records: list[ImageCaptions], **kwargs) -> CaptionedImageDataset:
        """The data set of one split (a subclass that reads images from elsewhere returns its own)."""
        return CaptionedImageDataset(records, **kwargs)

    def all_captions(self) -> list[str]:
        return [c for split in SPLIT_NAMES for c in self.datasets[split].captions]

    def images_checked(self) -> str:
        """When unreadable images are found (stated in the report)."""
        if self.verify_images:
            return "at start-up (every image decoded once); later failures are counted in skipped_runtime"
        return "when read (no start-up scan): unreadable ones are counted in skipped_runtime, per training epoch"

    def _report(self) -> None:
        sizes = ", ".join(f"{k} {d.num_images} images / {len(d)} captions / {self.groups[k]} groups"
                          for k, d in self.datasets.items())
        split = f"; split: {self.split_origin}" if self.split_origin else ""
        rank_zero_info(f"data: {self.name} ({self.layout}) at {self.root}: {sizes}{split}; {self.skips.summary()}; "
                       f"images checked {self.images_checked()}")
        self._write_report()

    def _write_report(self) -> None:
        """``data_report.json``: sizes, what the start-up read skipped (``skipped``) and what training
        passed over since (``skipped_runtime``, rewritten at each training epoch end)."""
        report = {"dataset": self.name, "layout": self.layout, "root": str(self.root),
                  "images": {k: d.num_images for k, d in self.datasets.items()},
                  "captions": {k: len(d) for k, d in self.datasets.items()},
                  "split_source": self.split_origin or None, "groups": self.groups,
                  "skipped": self.skips.counts(), "skipped_examples": self.skips.examples,
                  "images_checked": self.images_checked(), "skipped_runtime": self.runtime_skips}
        if self.report_dir is not None and rank_zero_only.rank == 0:
            write_text(self.report_dir / "data_report.json", json.dumps(report, indent=2, ensure_ascii=False))

    def note_runtime_skips(self, epoch: int, skipped: int, samples: int) -> None:
        """A training epoch's count (all ranks together) of records passed over because their image
        could not be read, out of ``samples`` served: added to ``data_report.json``; past
        ``max_skipped_fraction`` of the samples, training stops with a :class:`DataError`."""
        self.runtime_skips["total"] += int(skipped)
        self.runtime_skips["epochs"].append({"epoch": int(epoch), "skipped": int(skipped), "samples": int(samples)})
        self._write_report()
        if samples and skipped / samples > self.max_skipped_fraction:
            raise DataError(
                f"training epoch {epoch}: {skipped} of {samples} samples had an unreadable image "
                f"({skipped / samples:.1%}), more than data.max_skipped_fraction={self.max_skipped_fraction} "
                f"(data.root={self.root}; images checked {self.images_checked()}). The warnings above name the "
                "files: repair or remove them, or raise data.max_skipped_fraction to train on regardless")

    def _log_skips(self) -> None:
        trainer = getattr(self, "trainer", None)
        if trainer is None or getattr(self, "_skips_logged", False):
            return
        self._skips_logged = True
        for logger in trainer.loggers:
            logger.log_metrics({f"data/skipped_{k}": float(v) for k, v in self.skips.counts().items()}, step=0)

    def use_text_encoder(self, encoder) -> None:
        """The run's text encoder (a ``TextEncoder``: ``frozen``, ``identity()``, ``__call__``): when
        it is frozen and ``cache_text`` is on, the loaders serve its features of every caption from a
        cache built once, on the first loader (process 0 first under DDP)."""
        self.text_encoder = encoder

    def _attach_text_cache(self) -> None:
        """Encode every caption once with the run's (frozen) encoder, then serve features from disk."""
        if self.text_cache is not None or not self.cache_text:
            return
        trainer, encoder = getattr(self, "trainer", None), self.text_encoder
        if encoder is None or not getattr(encoder, "frozen", False):
            if encoder is not None:
                rank_zero_info("text cache off: the text encoder trains (encoder.mode != frozen)")
            return
        from datamodules.text_cache import load_or_build
        from gan_ga_utils.distributed import rank_zero_first

        cache_root = self.cache_dir or self.root / ".gan_ga_cache"
        captions = self.all_captions()
        build = lambda: load_or_build(encoder, captions, cache_root / "text_features",  # noqa: E731
                                      dtype=self.cache_dtype, batch_size=self.cache_batch_size)
        # under a trainer process 0 builds it first; a loader made outside one (one process) builds it
        self.text_cache = rank_zero_first(trainer.strategy, build, "building the text cache") if trainer else build()
        for dataset in self.datasets.values():
            dataset.text_cache = self.text_cache

    def _loader(self, split: str) -> DataLoader:
        self._attach_text_cache()
        train = split == "train"
        dataset = self.datasets[split]
        sampler = OneCaptionPerImageSampler(dataset, shuffle=train, fixed=not train, seed=self.seed, drop_last=train,
                                            position=self.training_position if train else None, batch_size=self.batch_size,
                                            tag_epoch=train)
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, drop_last=train,
                          num_workers=self.num_workers, pin_memory=self.pin_memory and torch.cuda.is_available(),
                          persistent_workers=self.persistent_workers and self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
