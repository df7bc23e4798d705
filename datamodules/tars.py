"""``data=webdataset``: img2dataset / WebDataset tar shards read in place.

``data.root`` holds ``*.tar`` files (any depth) whose members are grouped by key, WebDataset style:
``KEY.jpg`` (or .jpeg/.png/.webp) with ``KEY.txt`` (the caption; several lines = several captions);
``KEY.json`` and img2dataset's ``.parquet`` / ``_stats.json`` files are ignored. Each tar is indexed
once (member offsets, no image decoded); an image is then read by seeking into its tar, so the
real-data pipeline of ``captions.py`` applies unchanged: seeded split (``split_fractions``), one
caption per image per epoch, resumable order, equal disjoint shares under DDP, the text cache.
Skipped: images without a caption, captions without an image, unreadable tars (named in
``data_report.json``); captions that are not UTF-8 are decoded as Windows-1252 and counted.

Images are not scanned at start-up (an img2dataset folder holds millions): they are checked when
read, which ``data_report.json`` states (``images_checked``). A member that does not decode is
replaced by the next sample (image and caption), counted per training epoch as
``data/skipped_runtime`` and in the report's ``skipped_runtime``, and training stops past
``data.max_skipped_fraction`` (see ``captions.py``). JPEG members are decoded at a reduced scale,
other formats above ``data.max_image_pixels`` are skipped the same way.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from datamodules.captions import (
    IMAGE_SUFFIXES,
    CaptionDataModule,
    CaptionedImageDataset,
    DataError,
    ImageCaptions,
    SkipCounts,
    clean_caption,
    decode,
    decode_text,
    seeded_split,
)


@dataclass
class TarMember(ImageCaptions):
    """An image inside a tar: ``path`` names it (``TAR/KEY.jpg``); ``tar``, ``offset``, ``size`` read it."""

    tar: Path | None = None
    offset: int = 0
    size: int = 0


def index_tar(tar: Path, root: Path, skips: SkipCounts, max_chars: int) -> list[TarMember]:
    """The (image, captions) pairs of one tar, in member order."""
    images: dict[str, tarfile.TarInfo] = {}
    texts: dict[str, bytes] = {}
    try:
        with tarfile.open(tar) as archive:
            for member in archive:
                if not member.isfile():
                    continue
                key, dot, suffix = member.name.rpartition(".")
                if not dot:
                    continue
                if f".{suffix.lower()}" in IMAGE_SUFFIXES:
                    images[key] = member
                elif suffix.lower() == "txt":
                    texts[key] = archive.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as err:
        skips.note("unreadable_tars", f"{tar.relative_to(root)} ({type(err).__name__})")
        return []
    records = []
    for key, member in images.items():
        if key not in texts:
            skips.note("images_without_captions", f"{tar.name}:{member.name}")
            continue
        text = decode_text(texts.pop(key), f"{tar.name}:{key}.txt", skips)
        captions = [c for c in (clean_caption(line, max_chars) for line in text.splitlines()) if c]
        if not captions:
            skips.note("empty_captions", f"{tar.name}:{key}.txt")
            continue
        records.append(TarMember(path=tar / member.name, captions=captions, tar=tar, offset=member.offset_data,
                                 size=member.size))
    for key in texts:
        skips.note("missing_images", f"{tar.name}:{key}.txt")
    return records


class TarImages(CaptionedImageDataset):
    """A split whose images are tar members, read by seeking to their offset."""

    unreadable_fix = "the tar shard is damaged: download or write it again, or move it out of data.root"

    def read_image(self, index: int) -> tuple[Image.Image, float]:
        record = self.records[index]
        with open(record.tar, "rb") as f:
            f.seek(record.offset)
            data = f.read(record.size)
        return decode(io.BytesIO(data), self.decode_size, record.bbox, self.max_pixels)


class WebDatasetDataModule(CaptionDataModule):
    name = "webdataset"

    def __init__(self, *, split_fractions: dict | None = None, **kwargs):
        self.split_fractions = dict(split_fractions or {"val": 0.05, "test": 0.0})
        kwargs.update(verify_images=False)  # images are decoded when read, not scanned up front
        super().__init__(**kwargs)

    @classmethod
    def where(cls) -> str:
        return ("data=webdataset reads *.tar shards under data.root (img2dataset output: KEY.jpg + KEY.txt "
                "per sample).")

    def read(self, skips: SkipCounts) -> dict[str, list[ImageCaptions]]:
        tars = sorted(p for p in self.root.rglob("*.tar") if p.is_file())
        if not tars:
            raise DataError(f"data.root={self.root}: no .tar shards found. {self.where()}")
        self.layout = f"{len(tars)} tar shards"
        records = [r for tar in tars for r in index_tar(tar, self.root, skips, self.max_caption_chars)]
        return seeded_split(records, self.split_fractions, self.split_seed)

    def make_dataset(self, split: str, records: list[ImageCaptions], **kwargs) -> CaptionedImageDataset:
        return TarImages(records, **kwargs)
