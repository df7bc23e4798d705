"""Your own images and captions, in either of two forms:

* a folder (searched recursively) of images, each with a same-named ``.txt`` beside it holding one
  caption per line (several lines: several captions). Images without a ``.txt`` are counted and
  skipped; a ``.txt`` without an image counts as rows naming a missing image; a ``.txt`` of blank
  lines only counts as an empty caption (its image is left out).
* ``data.manifest=FILE``: JSON lines ``{"image": PATH, "caption": TEXT}`` (or ``"captions": [..]``;
  ``file_name``/``text`` accepted too) or a CSV whose header names an image and a caption column.
  Relative image paths are relative to the manifest's folder.

Split: seeded, by image (``split_fractions``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator

from datamodules.captions import (
    IMAGE_SUFFIXES,
    CaptionDataModule,
    DataError,
    ImageCaptions,
    SkipCounts,
    decode_text,
    group_rows,
    missing,
    seeded_split,
)
from datamodules.flickr8k import read_lines

IMAGE_KEYS = ("image", "file_name", "filename", "path", "image_path", "file")
CAPTION_KEYS = ("caption", "captions", "text", "prompt")


def _pick(keys: tuple[str, ...], available) -> str | None:
    return next((k for k in keys if k in available), None)


def jsonl_rows(path: Path, skips: SkipCounts) -> Iterator[tuple[Path, str, str]]:
    for number, line in read_lines(path, skips):
        where = f"{path.name}:{number}"
        try:
            record = json.loads(line)
        except ValueError:
            skips.note("rows_malformed", where)
            continue
        image_key = _pick(IMAGE_KEYS, record) if isinstance(record, dict) else None
        caption_key = _pick(CAPTION_KEYS, record) if isinstance(record, dict) else None
        if image_key is None or caption_key is None:
            skips.note("rows_malformed", where)
            continue
        captions = record[caption_key]
        for caption in captions if isinstance(captions, list) else [captions]:
            yield path.parent / str(record[image_key]), str(caption), where


def manifest_csv_rows(path: Path, skips: SkipCounts) -> Iterator[tuple[Path, str, str]]:
    text = decode_text(path.read_bytes(), path.name, skips)
    reader = csv.reader(text.splitlines())
    header = [h.strip().lower() for h in next(reader, [])]
    image_key, caption_key = _pick(IMAGE_KEYS, header), _pick(CAPTION_KEYS, header)
    if image_key is None or caption_key is None:
        raise DataError(f"{path}: header {header} needs an image column ({', '.join(IMAGE_KEYS)}) and a caption "
                        f"column ({', '.join(CAPTION_KEYS)})")
    i_image, i_caption = header.index(image_key), header.index(caption_key)
    for number, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(i_image, i_caption):
            skips.note("rows_malformed", f"{path.name}:{number}")
            continue
        yield path.parent / row[i_image].strip(), row[i_caption], f"{path.name}:{number}"


class FolderDataModule(CaptionDataModule):
    name = "folder"

    def __init__(self, *, manifest: str | None = None, split_fractions: dict | None = None, **kwargs):
        self.manifest = Path(manifest).expanduser() if manifest else None
        self.split_fractions = dict(split_fractions or {"val": 0.05, "test": 0.0})
        super().__init__(**kwargs)

    @classmethod
    def where(cls) -> str:
        return ("data=folder reads images with same-named .txt captions under data.root, or a JSONL/CSV manifest "
                "given as data.manifest=FILE.")

    def _folder_rows(self, skips: SkipCounts) -> Iterator[tuple[Path, str, str]]:
        files = sorted(p for p in self.root.rglob("*") if p.is_file() and not any(
            part.startswith(".") for part in p.relative_to(self.root).parts))
        images = {p.with_suffix(""): p for p in files if p.suffix.lower() in IMAGE_SUFFIXES}
        for text in (p for p in files if p.suffix.lower() == ".txt"):
            image = images.pop(text.with_suffix(""), text.with_suffix(".jpg"))
            name = str(text.relative_to(self.root))
            lines = list(read_lines(text, skips, name))
            if not lines:  # only blank lines: an empty caption of its image (counted, not lost)
                yield image, "", f"{name} (only blank lines)"
            for number, line in lines:
                yield image, line, f"{name}:{number}"
        for image in images.values():  # images left without a caption file
            skips.note("images_without_captions", str(image.relative_to(self.root)))

    def read(self, skips: SkipCounts) -> dict[str, list[ImageCaptions]]:
        if self.manifest is not None:
            manifest = self.manifest if self.manifest.is_absolute() else self.root / self.manifest
            if not manifest.is_file():
                raise missing(manifest, "data.manifest", "Point it at a .jsonl or .csv of (image, caption).")
            suffix = manifest.suffix.lower()
            if suffix not in (".jsonl", ".json", ".csv"):
                raise DataError(f"data.manifest={manifest}: use a .jsonl or .csv file")
            rows = jsonl_rows(manifest, skips) if suffix != ".csv" else manifest_csv_rows(manifest, skips)
            self.layout = f"manifest {manifest.name}"
        else:
            rows = self._folder_rows(skips)
            self.layout = "folder of images + .txt"
        records = group_rows(rows, skips, self.max_caption_chars)
        return seeded_split(records, self.split_fractions, self.seed)
