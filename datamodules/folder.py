"""Your own images and captions, in either of two forms:

* a folder (searched recursively) of images, each with a same-named ``.txt`` beside it holding one
  caption per line (several lines: several captions). Images without a ``.txt`` are counted and
  skipped; a ``.txt`` without an image counts as rows naming a missing image; a ``.txt`` of blank
  lines only counts as an empty caption (its image is left out).
* ``data.manifest=FILE``: JSON lines ``{"image": PATH, "caption": TEXT}`` (or ``"captions": [..]``,
  all kept; ``file``/``file_name``/``text`` accepted too) or a CSV whose header names an image and a
  caption column. Relative image paths are relative to the manifest's folder.

Split, first found wins:

* ``split`` in the manifest (a JSONL key or CSV column; every row then has one: train, val or test);
* split folders: ``data.root/train/`` (and optionally ``val/``, ``test/``), each read as a folder of
  images + ``.txt`` (images elsewhere under ``data.root`` are counted and ignored);
* else seeded (``split_fractions``). A split the data does not give is drawn from train, seeded
  (``split_fractions``; test with the default 0.0 is then the validation split).

``data.label_columns`` (manifest columns, e.g. ``[group, subgroup]``) label each image for the
reference network of the real-data metrics (``lightning_modules/metrics/reference.py``).

Seeded splits keep a group whole (``data.group_by``): null, by image; a manifest column (e.g.
``emoji``: every drawing of one emoji); or ``stem_prefix``, the file stem before its last ``_``
(``1f600_noto.png`` and ``1f600_twemoji.png`` are one group).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator, Sequence

from lightning.pytorch.utilities import rank_zero_warn

from datamodules.captions import (
    IMAGE_SUFFIXES,
    SPLIT_NAMES,
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
from gan_ga_utils.checks import Problems, check

IMAGE_KEYS = ("image", "file_name", "filename", "path", "image_path", "file")
CAPTION_KEYS = ("caption", "captions", "text", "prompt")
SPLIT_KEY = "split"  # the manifest column that names a row's split
STEM_PREFIX = "stem_prefix"  # data.group_by: group files by the stem before its last "_"

Row = tuple[Path, str, str, dict]  # image, raw caption, where (FILE:LINE), the row's fields


def _pick(keys: tuple[str, ...], available) -> str | None:
    return next((k for k in keys if k in available), None)


def jsonl_rows(path: Path, skips: SkipCounts) -> Iterator[Row]:
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
        for caption in (captions or [""]) if isinstance(captions, list) else [captions]:  # []: an empty caption
            yield path.parent / str(record[image_key]), str(caption), where, record


def manifest_csv_rows(path: Path, skips: SkipCounts) -> Iterator[Row]:
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
        yield path.parent / row[i_image].strip(), row[i_caption], f"{path.name}:{number}", dict(zip(header, row))


def stem_prefix(path: Path) -> str:
    """A file's group under ``data.group_by=stem_prefix``: its stem before the last ``_``, all of it
    when there is none (``train/1f600_noto.png`` -> ``1f600``)."""
    return path.stem.rpartition("_")[0] or path.stem


def _one_value(seen: dict, image: Path, value: str, where: str, what: str) -> None:
    """Record ``image``'s ``what`` (split or group); an image named twice must have the same one."""
    first = seen.setdefault(image, (value, where))
    if first[0] != value:
        raise DataError(f"{where}: {image.name} has {what} {value!r}, but {first[1]} gives it {first[0]!r}; "
                        f"an image has one {what}: correct one of the rows")


class FolderDataModule(CaptionDataModule):
    name = "folder"

    def __init__(self, *, manifest: str | None = None, split_fractions: dict | None = None,
                 group_by: str | None = None, label_columns: list[str] | None = None, source: str | None = None,
                 **kwargs):
        check(type(self), {"manifest": manifest, "split_fractions": split_fractions, "group_by": group_by,
                           "label_columns": label_columns}, "data")
        self.source = source
        self.manifest = Path(manifest).expanduser() if manifest else None
        self.split_fractions = dict(split_fractions or {"val": 0.05, "test": 0.0})
        self.group_by = group_by
        self.label_columns = [str(c) for c in label_columns or []]
        super().__init__(**kwargs)

    @classmethod
    def config_problems(cls, values, key: str = "data") -> list[str]:
        p = Problems(values, key)
        group_by = values.get("group_by")
        p.need(group_by is None or (isinstance(group_by, str) and group_by.strip() != ""), "group_by",
               f"null (split by image), {STEM_PREFIX} (by file stem before its last '_') or a manifest column name")
        if isinstance(group_by, str) and group_by not in ("", STEM_PREFIX) and not values.get("manifest"):
            p.need(False, "group_by", f"names a manifest column, but data.manifest is not set: use data.group_by="
                   f"{STEM_PREFIX} (files grouped by the stem before their last '_'), null, or set data.manifest=FILE")
        columns = values.get("label_columns")
        p.need(columns is None or (isinstance(columns, Sequence) and not isinstance(columns, str) and all(
            isinstance(c, str) and c.strip() for c in columns)), "label_columns",
            "null or a list of manifest column names, e.g. [group,subgroup]")
        if columns and not values.get("manifest"):
            p.need(False, "label_columns", "names manifest columns, but data.manifest is not set: set data.manifest="
                   "FILE, or data.label_columns=null")
        return super().config_problems(values, key) + p

    def where(self) -> str:
        """How to get the folder (``data.source``, set by a preset such as experiment=emoji64), else
        what the reader reads."""
        return self.source or ("data=folder reads images with same-named .txt captions under data.root, or a "
                               "JSONL/CSV manifest given as data.manifest=FILE.")

    def _files(self, folder: Path) -> list[Path]:
        return sorted(p for p in folder.rglob("*") if p.is_file() and not any(
            part.startswith(".") for part in p.relative_to(self.root).parts))

    def _folder_rows(self, skips: SkipCounts, folder: Path | None = None) -> Iterator[tuple[Path, str, str]]:
        """Rows of the images + ``.txt`` files under ``folder`` (default ``data.root``)."""
        files = self._files(folder or self.root)
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

    def _manifest_rows(self, manifest: Path, rows: Iterator[Row], splits: dict, groups: dict, labels: dict
                       ) -> Iterator[tuple[Path, str, str]]:
        """The rows without their fields; each image's ``split`` column (when the manifest has one)
        goes to ``splits``, its ``data.group_by`` column to ``groups``, its ``data.label_columns`` to
        ``labels``. Bad values stop the read."""
        first_split = None  # where the first row was: it decides whether rows carry a split
        for image, caption, where, fields in rows:
            here = f"data.manifest={manifest.parent / where}"
            first_split = first_split or (where, SPLIT_KEY in fields)
            if (SPLIT_KEY in fields) != first_split[1]:
                has, lacks = (where, first_split[0]) if SPLIT_KEY in fields else (first_split[0], where)
                raise DataError(f"{here}: {has} has a '{SPLIT_KEY}' and {lacks} has none: give every row a split "
                                f"({', '.join(SPLIT_NAMES)}), or none for a seeded split")
            if first_split[1]:
                split = str(fields[SPLIT_KEY]).strip().lower()
                if split not in SPLIT_NAMES:
                    raise DataError(f"{here}: {SPLIT_KEY}={fields[SPLIT_KEY]!r} is not one of "
                                    f"{', '.join(SPLIT_NAMES)}: correct the row, or drop the split column for a "
                                    "seeded split")
                _one_value(splits, image, split, where, "split")
            if self.group_by not in (None, STEM_PREFIX):
                value = fields.get(self.group_by, fields.get(self.group_by.lower()))
                if value is None or str(value).strip() == "":
                    raise DataError(f"{here}: data.group_by={self.group_by!r} but the row has no value for it (its "
                                    f"fields: {', '.join(map(str, fields))}): name one of them, or data.group_by=null "
                                    "to split by image")
                _one_value(groups, image, str(value).strip(), where, "group")
            for column in self.label_columns:
                value = fields.get(column)
                if value is None or str(value).strip() == "":
                    raise DataError(f"{here}: data.label_columns names {column!r} but the row has no value for it "
                                    f"(its fields: {', '.join(map(str, fields))}): give every row one, or drop it "
                                    "from data.label_columns")
                _one_value(labels.setdefault(column, {}), image, str(value).strip(), where, column)
            yield image, caption, where

    def _split_folders(self, skips: SkipCounts, splits: dict) -> Iterator[tuple[Path, str, str]]:
        """The rows of ``train/``, ``val/``, ``test/`` (those present), each image's split to ``splits``."""
        folders = {s: self.root / s for s in SPLIT_NAMES if (self.root / s).is_dir()}
        others = sorted(e for e in self.root.iterdir() if e.name not in folders and not e.name.startswith("."))
        outside = [p for e in others for p in (self._files(e) if e.is_dir() else [e])
                   if p.suffix.lower() in IMAGE_SUFFIXES]
        self.split_origin = f"split folders ({', '.join(folders)})"
        if outside:
            example = outside[0].relative_to(self.root)
            self.split_origin += f", {len(outside)} images outside them ignored (e.g. {example})"
        for split, folder in folders.items():
            for image, caption, where in self._folder_rows(skips, folder):
                splits.setdefault(image, (split, where))
                yield image, caption, where

    def read(self, skips: SkipCounts) -> dict[str, list[ImageCaptions]]:
        given: dict[Path, tuple[str, str]] = {}  # image -> (split, where), when the data names one
        groups: dict[Path, tuple[str, str]] = {}  # image -> (group, where), data.group_by a manifest column
        labels: dict[str, dict[Path, tuple[str, str]]] = {}  # column -> image -> (value, where)
        if self.manifest is not None:
            manifest = self.manifest if self.manifest.is_absolute() else self.root / self.manifest
            if not manifest.is_file():
                raise missing(manifest, "data.manifest", self.source or "Point it at a .jsonl or .csv of (image, caption).")
            suffix = manifest.suffix.lower()
            if suffix not in (".jsonl", ".json", ".csv"):
                raise DataError(f"data.manifest={manifest}: use a .jsonl or .csv file")
            rows = jsonl_rows(manifest, skips) if suffix != ".csv" else manifest_csv_rows(manifest, skips)
            rows = self._manifest_rows(manifest, rows, given, groups, labels)
            self.layout, self.split_origin = f"manifest {manifest.name}", f"manifest {SPLIT_KEY} column"
        elif (self.root / "train").is_dir():
            rows = self._split_folders(skips, given)  # sets split_origin as it starts
            self.layout = "split folders of images + .txt"
        else:
            rows = self._folder_rows(skips)
            self.layout = "folder of images + .txt"
        records = group_rows(rows, skips, self.max_caption_chars)
        for record in records:  # None: the image is its own group
            by_stem = self.group_by == STEM_PREFIX
            record.group = stem_prefix(record.path) if by_stem else groups.get(record.path, [None])[0]
            if self.label_columns:
                record.labels = {c: labels[c][record.path][0] for c in self.label_columns}
        seeded = "seeded by " + (f"group {self.group_by!r}" if self.group_by else "image")
        if not given:
            self.split_origin = seeded
            return seeded_split(records, self.split_fractions, self.split_seed)
        splits = {s: [r for r in records if given[r.path][0] == s] for s in SPLIT_NAMES}
        drawn = {s: self.split_fractions.get(s, 0.0) for s in ("val", "test") if not splits[s]}
        if any(drawn.values()):  # splits the data does not give: from train, seeded
            part = seeded_split(splits["train"], drawn, self.split_seed)
            splits.update({s: part[s] for s in ("train", *drawn)})
            self.split_origin += "; " + ", ".join(s for s, f in drawn.items() if f) + f" {seeded} from train"
        self._warn_shared_groups(splits)
        return splits

    def _warn_shared_groups(self, splits: dict[str, list[ImageCaptions]]) -> None:
        """A split given by the data may put one group in two splits: say so (data.group_by set)."""
        if not self.group_by:
            return
        where: dict[str, set[str]] = {}
        for split, records in splits.items():
            for record in records:
                where.setdefault(record.group, set()).add(split)
        shared = sorted(group for group, found in where.items() if len(found) > 1)
        if shared:
            rank_zero_warn(f"data.group_by={self.group_by!r}: {len(shared)} groups are in two splits as "
                           f"{self.split_origin.split(';')[0]} gives them (e.g. {', '.join(shared[:3])})")
