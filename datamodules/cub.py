"""CUB-200-2011 birds with the 10 captions per image of Reed et al. (2016).

``data.root`` holds ``CUB_200_2011/`` (``images/CLASS/NAME.jpg``, ``images.txt``,
``bounding_boxes.txt``) and the caption folder ``text/`` (AttnGAN / DF-GAN's birds.zip) or
``text_c10/`` (Reed's cvpr2016_cub), with ``CLASS/NAME.txt`` holding one caption per line (a file of
blank lines only counts as an empty caption; its image is left out).

The split is by class, as in the text-to-image literature: 150 train+val classes, 50 test classes.
Its source, first found wins: ``train/filenames.pickle`` + ``test/filenames.pickle`` (birds.zip),
``trainvalclasses.txt`` + ``testclasses.txt`` (cvpr2016_cub), else :data:`TEST_CLASSES`. Validation
uses test-class images, as the literature evaluates on them.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Iterator

from datamodules.captions import CaptionDataModule, DataError, ImageCaptions, SkipCounts, group_rows
from datamodules.flickr8k import read_lines

TEST_CLASSES = (
    "001.Black_footed_Albatross", "004.Groove_billed_Ani", "006.Least_Auklet", "008.Rhinoceros_Auklet",
    "009.Brewer_Blackbird", "014.Indigo_Bunting", "023.Brandt_Cormorant", "029.American_Crow",
    "031.Black_billed_Cuckoo", "033.Yellow_billed_Cuckoo", "034.Gray_crowned_Rosy_Finch", "035.Purple_Finch",
    "036.Northern_Flicker", "037.Acadian_Flycatcher", "038.Great_Crested_Flycatcher",
    "043.Yellow_bellied_Flycatcher", "049.Boat_tailed_Grackle", "051.Horned_Grebe", "053.Western_Grebe",
    "066.Western_Gull", "072.Pomarine_Jaeger", "079.Belted_Kingfisher", "083.White_breasted_Kingfisher",
    "084.Red_legged_Kittiwake", "086.Pacific_Loon", "091.Mockingbird", "095.Baltimore_Oriole",
    "096.Hooded_Oriole", "098.Scott_Oriole", "101.White_Pelican", "102.Western_Wood_Pewee", "103.Sayornis",
    "112.Great_Grey_Shrike", "114.Black_throated_Sparrow", "119.Field_Sparrow", "121.Grasshopper_Sparrow",
    "130.Tree_Sparrow", "135.Bank_Swallow", "138.Tree_Swallow", "147.Least_Tern", "156.White_eyed_Vireo",
    "163.Cape_May_Warbler", "165.Chestnut_sided_Warbler", "166.Golden_winged_Warbler", "180.Wilson_Warbler",
    "183.Northern_Waterthrush", "185.Bohemian_Waxwing", "186.Cedar_Waxwing",
    "187.American_Three_toed_Woodpecker", "197.Marsh_Wren",
)


class _NamesOnly(pickle.Unpickler):
    """filenames.pickle is a list of strings: refuse anything else a pickle could construct."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a file-name list")


def read_name_pickle(path: Path) -> list[str]:
    with path.open("rb") as f:
        try:
            names = _NamesOnly(f, encoding="latin1").load()
        except Exception as err:  # noqa: BLE001 - any failure means: not a list of names
            raise DataError(f"{path}: not a pickled list of file names ({err})") from err
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DataError(f"{path}: not a pickled list of file names")
    return names


class CubDataModule(CaptionDataModule):
    name = "cub"

    def __init__(self, *, crop_to_bbox: bool = True, **kwargs):
        self.crop_to_bbox = crop_to_bbox
        super().__init__(**kwargs)

    @classmethod
    def where(cls) -> str:
        return ("CUB-200-2011 comes from https://www.vision.caltech.edu/datasets/cub_200_2011/ (CUB_200_2011.tgz); "
                "the captions from Reed et al. (cvpr2016_cub, text_c10/) or AttnGAN's birds.zip (text/).")

    def _first(self, *candidates: Path) -> Path | None:
        return next((p for p in candidates if p.exists()), None)

    def _rows(self, text_dir: Path, images: Path, skips: SkipCounts) -> Iterator[tuple[Path, str, str]]:
        for path in sorted(text_dir.glob("*/*.txt")):
            image = images / path.parent.name / f"{path.stem}.jpg"
            name = f"{path.parent.name}/{path.name}"
            lines = list(read_lines(path, skips, name))
            if not lines:  # only blank lines: an empty caption of its image (counted, not lost)
                yield image, "", f"{name} (only blank lines)"
            for number, line in lines:
                yield image, line, f"{name}:{number}"

    def _bboxes(self, cub: Path) -> dict[str, tuple[float, float, float, float]]:
        index, boxes = cub / "images.txt", cub / "bounding_boxes.txt"
        if not (index.is_file() and boxes.is_file()):
            return {}
        paths = dict(line.split(maxsplit=1) for _, line in read_lines(index) if len(line.split()) == 2)
        out = {}
        for _, line in read_lines(boxes):
            parts = line.split()
            if len(parts) == 5 and parts[0] in paths:
                out[paths[parts[0]].strip()] = tuple(float(v) for v in parts[1:])
        return out

    def _test_classes(self) -> tuple[set[str], set[str] | None]:
        """(test classes, test image keys ``CLASS/NAME`` when the split is per image)."""
        for base in (self.root, self.root / "birds"):
            train_p, test_p = base / "train" / "filenames.pickle", base / "test" / "filenames.pickle"
            if train_p.is_file() and test_p.is_file():
                names = set(read_name_pickle(test_p))
                self.layout += f", split from {test_p.relative_to(self.root)}"
                return {n.split("/")[0] for n in names}, names
            test_c = self._first(base / "testclasses.txt", base / "cvpr2016_cub" / "testclasses.txt")
            if test_c is not None:
                self.layout += f", split from {test_c.relative_to(self.root)}"
                return {line.strip() for _, line in read_lines(test_c)}, None
        self.layout += ", built-in 50 test classes"
        return set(TEST_CLASSES), None

    def read(self, skips: SkipCounts) -> dict[str, list[ImageCaptions]]:
        cub = self.root / "CUB_200_2011" if (self.root / "CUB_200_2011").is_dir() else self.root
        images = cub / "images"
        if not images.is_dir():
            raise DataError(f"data.root={self.root}: {images} does not exist. {self.where()}")
        text_dir = self._first(self.root / "text", self.root / "text_c10", self.root / "cvpr2016_cub" / "text_c10",
                               self.root / "birds" / "text")
        if text_dir is None:
            raise DataError(f"data.root={self.root}: no caption folder ({self.root / 'text'} or "
                            f"{self.root / 'text_c10'}). {self.where()}")
        self.layout = f"CUB_200_2011 + {text_dir.relative_to(self.root)}/"
        records = group_rows(self._rows(text_dir, images, skips), skips, self.max_caption_chars)
        if self.crop_to_bbox:
            boxes = self._bboxes(cub)
            for r in records:
                r.bbox = boxes.get(f"{r.path.parent.name}/{r.path.name}")
        test_classes, test_images = self._test_classes()

        def is_test(r: ImageCaptions) -> bool:
            if test_images is not None:
                return f"{r.path.parent.name}/{r.path.stem}" in test_images
            return r.path.parent.name in test_classes

        test = [r for r in records if is_test(r)]
        return {"train": [r for r in records if not is_test(r)], "val": test, "test": test}
