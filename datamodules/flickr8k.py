"""Flickr8K in the three layouts found on disks.

``original``  ``Flickr8k_text/Flickr8k.token.txt`` (``NAME.jpg#k<TAB>caption``), the split files
              ``Flickr8k_text/Flickr_8k.{train,dev,test}Images.txt`` and images in ``Flicker8k_Dataset/``
              (the release's own spelling; ``Flickr8k_Dataset/`` is accepted too).
``kaggle``    ``captions.txt``: CSV with header ``image,caption`` (captions may hold commas and
              quotes), images in ``Images/``; no split files, so a seeded split by image.
``karpathy``  ``dataset_flickr8k.json`` (``images[].filename/split/sentences[].raw``) beside either
              image folder; ``restval`` counts as train.

``split_source``: ``auto`` (official split files when present, else seeded), ``official``,
``karpathy`` or ``random`` (seeded, ``split_fractions``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator

from datamodules.captions import (
    CaptionDataModule,
    DataError,
    ImageCaptions,
    SkipCounts,
    decode_text,
    group_rows,
    seeded_split,
)
from gan_ga_utils.checks import Problems, check

SPLIT_SOURCES = ("auto", "official", "karpathy", "random")
SPLIT_FILES = {"train": "Flickr_8k.trainImages.txt", "val": "Flickr_8k.devImages.txt", "test": "Flickr_8k.testImages.txt"}
KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "val", "test": "test"}


def read_lines(path: Path, skips: SkipCounts | None = None, where: str | None = None) -> Iterator[tuple[int, str]]:
    """Numbered non-blank lines, any line ending (CRLF included), a UTF-8 BOM dropped; a file that is
    not UTF-8 is decoded as :func:`~datamodules.captions.decode_text` says (counted in ``skips``)."""
    text = decode_text(path.read_bytes(), where or path.name, skips)
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line


def token_rows(path: Path, images: Path, skips: SkipCounts) -> Iterator[tuple[Path, str, str]]:
    """``Flickr8k.token.txt``: ``NAME.jpg#k<TAB>caption`` per line."""
    for number, line in read_lines(path, skips):
        name, tab, caption = line.partition("\t")
        if not tab or "#" not in name:
            skips.note("rows_malformed", f"{path.name}:{number}")
            continue
        yield images / name.rsplit("#", 1)[0].strip(), caption, f"{path.name}:{number}"


def csv_rows(path: Path, images: Path, skips: SkipCounts) -> Iterator[tuple[Path, str, str]]:
    """Kaggle ``captions.txt``: CSV with a header naming ``image`` and ``caption``."""
    text = decode_text(path.read_bytes(), path.name, skips)
    reader = csv.reader(text.splitlines())
    header = [h.strip().lower() for h in next(reader, [])]
    if "image" not in header or "caption" not in header:
        raise DataError(f"{path}: the header is {header}, expected the columns image,caption")
    i_image, i_caption = header.index("image"), header.index("caption")
    for number, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(i_image, i_caption) or not row[i_image].strip():
            skips.note("rows_malformed", f"{path.name}:{number}")
            continue
        if len(row) > len(header):  # an unquoted comma inside the caption: keep the whole tail
            row = row[:i_caption] + [",".join(row[i_caption:])]
        yield images / row[i_image].strip(), row[i_caption], f"{path.name}:{number}"


class Flickr8kDataModule(CaptionDataModule):
    name = "flickr8k"

    def __init__(self, *, split_source: str = "auto", split_fractions: dict | None = None, **kwargs):
        check(type(self), {"split_source": split_source, "split_fractions": split_fractions}, "data")
        self.split_source = split_source
        self.split_fractions = dict(split_fractions or {"val": 0.125, "test": 0.125})
        super().__init__(**kwargs)

    @classmethod
    def config_problems(cls, values, key: str = "data") -> list[str]:
        p = Problems(values, key)
        p.choice("split_source", SPLIT_SOURCES)
        return super().config_problems(values, key) + p

    @classmethod
    def where(cls) -> str:
        return ("Flickr8K comes from https://www.kaggle.com/datasets/adityajn105/flickr8k (captions.txt + Images/) "
                "or the original release (Flickr8k_Dataset.zip + Flickr8k_text.zip, "
                "https://github.com/jbrownlee/Datasets/releases); unpack it under data.root.")

    def _image_dir(self) -> Path:
        for name in ("Flicker8k_Dataset", "Flickr8k_Dataset", "Images", "images"):
            if (self.root / name).is_dir():
                return self.root / name
        raise DataError(f"data.root={self.root}: no image folder (looked for Flicker8k_Dataset/, Flickr8k_Dataset/, "
                        f"Images/). {self.where()}")

    def _karpathy(self, images: Path, skips: SkipCounts) -> dict[str, list[ImageCaptions]]:
        path = next((p for p in (self.root / "dataset_flickr8k.json", self.root / "Flickr8k_text" / "dataset_flickr8k.json")
                     if p.is_file()), self.root / "dataset_flickr8k.json")
        if not path.is_file():
            raise DataError(f"data.split_source=karpathy: {path} does not exist. It is in Karpathy's caption_datasets.zip "
                            "(https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip).")
        try:
            entries = json.loads(path.read_text(encoding="utf-8-sig"))["images"]
        except (ValueError, KeyError) as err:
            raise DataError(f"{path}: not a Karpathy split file ({err}); expected {{\"images\": [...]}}") from err
        rows: dict[str, list] = {"train": [], "val": [], "test": []}
        for k, entry in enumerate(entries):
            split = KARPATHY_SPLITS.get(str(entry.get("split")))
            if split is None or "filename" not in entry:
                skips.note("rows_malformed", f"{path.name} images[{k}]")
                continue
            for s, sentence in enumerate(entry.get("sentences", [])):
                raw = sentence.get("raw") or " ".join(sentence.get("tokens", []))
                rows[split].append((images / entry["filename"], raw, f"{path.name} images[{k}].sentences[{s}]"))
        self.layout = f"karpathy split, images in {images.name}/"
        return {split: group_rows(r, skips, self.max_caption_chars) for split, r in rows.items()}

    def read(self, skips: SkipCounts) -> dict[str, list[ImageCaptions]]:
        images = self._image_dir()
        if self.split_source == "karpathy":
            return self._karpathy(images, skips)
        text_dir = self.root / "Flickr8k_text"
        token_file = text_dir / "Flickr8k.token.txt"
        if not token_file.is_file() and (self.root / "Flickr8k.token.txt").is_file():
            text_dir, token_file = self.root, self.root / "Flickr8k.token.txt"
        if token_file.is_file():
            records = group_rows(token_rows(token_file, images, skips), skips, self.max_caption_chars)
            self.layout = "original release"
        elif (self.root / "captions.txt").is_file():
            records = group_rows(csv_rows(self.root / "captions.txt", images, skips), skips, self.max_caption_chars)
            self.layout = "kaggle copy"
        else:
            raise DataError(f"data.root={self.root}: found neither {token_file} (original release) nor "
                            f"{self.root / 'captions.txt'} (Kaggle copy). {self.where()}")
        split_files = {k: text_dir / v for k, v in SPLIT_FILES.items()}
        has_official = all(p.is_file() for p in split_files.values())
        if self.split_source == "official" and not has_official:
            absent = next(p for p in split_files.values() if not p.is_file())
            raise DataError(f"data.split_source=official: {absent} does not exist (it ships in Flickr8k_text.zip); "
                            "use data.split_source=random for a seeded split")
        if has_official and self.split_source in ("auto", "official"):
            self.layout += ", official split"
            by_name = {r.path.name: r for r in records}
            splits = {}
            for split, path in split_files.items():
                names = [line.strip() for _, line in read_lines(path)]
                splits[split] = [by_name[n] for n in names if n in by_name]
            return splits
        self.layout += ", seeded split"
        return seeded_split(records, self.split_fractions, self.split_seed)
