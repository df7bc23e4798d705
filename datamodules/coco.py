"""COCO captions, 2014 or 2017: ``annotations/captions_{train,val}YEAR.json`` with images in
``trainYEAR/`` and ``valYEAR/``. Every caption of an image is kept (5 to 7); validation and test use
the val split (COCO's test images have no public captions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from datamodules.captions import CaptionDataModule, DataError, ImageCaptions, SkipCounts, group_rows, missing
from gan_ga_utils.checks import Problems, check

YEARS = (2014, 2017)


def annotation_rows(path: Path, images: Path, skips: SkipCounts) -> Iterator[tuple[Path, str, str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
        files = {int(im["id"]): im["file_name"] for im in data["images"]}
        annotations = data["annotations"]
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a COCO captions file ({type(err).__name__}: {err}); "
                        "expected the keys images[].id/file_name and annotations[].image_id/caption") from err
    for k, ann in enumerate(annotations):
        where = f"{path.name} annotations[{k}]"
        try:
            name, caption = files[int(ann["image_id"])], ann["caption"]
        except (KeyError, TypeError, ValueError):
            skips.note("rows_malformed", where)
            continue
        yield images / name, str(caption), where


class CocoDataModule(CaptionDataModule):
    name = "coco"

    def __init__(self, *, year: int = 2017, **kwargs):
        check(type(self), {"year": year}, "data")
        self.year = int(year)
        super().__init__(**kwargs)

    @classmethod
    def config_problems(cls, values, key: str = "data") -> list[str]:
        p = Problems(values, key)
        p.choice("year", YEARS)
        return super().config_problems(values, key) + p

    @classmethod
    def where(cls) -> str:
        return ("COCO comes from https://cocodataset.org/#download: trainYEAR.zip, valYEAR.zip and "
                "annotations_trainvalYEAR.zip, unpacked side by side under data.root.")

    def read(self, skips: SkipCounts) -> dict[str, list[ImageCaptions]]:
        splits = {}
        for split in ("train", "val"):
            annotations = self.root / "annotations" / f"captions_{split}{self.year}.json"
            images = self.root / f"{split}{self.year}"
            if not annotations.is_file():
                raise missing(annotations, "data.root", self.where())
            if not images.is_dir():
                raise missing(images, "data.root", self.where())
            splits[split] = group_rows(annotation_rows(annotations, images, skips), skips, self.max_caption_chars)
        self.layout = f"captions {self.year}"
        return splits
