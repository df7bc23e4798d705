"""Small copies of the real data set layouts, written as real files, quirks included.

Every writer returns the data root and the skip counts a correct reader must report.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

CAPTIONS = [
    "A dog, brown and white, runs on the grass .",
    'A "quoted" caption with commas, and more , words',
    "  Un café près de la mer — naïve façade  ",
    "two children play\tin the   sand",
    "a man rides a bike",
]


def _pixels(seed: int, size=(40, 30)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)


def write_image(path: Path, kind: str, seed: int = 0) -> Path:
    """kind: rgb | gray | cmyk | rgba_png | palette_png | truncated | not_an_image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(_pixels(seed))
    if kind == "rgb":
        rgb.save(path, "JPEG", quality=90)
    elif kind == "gray":
        rgb.convert("L").save(path, "JPEG")
    elif kind == "cmyk":
        rgb.convert("CMYK").save(path, "JPEG")
    elif kind == "rgba_png":
        rgba = rgb.convert("RGBA")
        rgba.putalpha(Image.fromarray(np.tile(np.arange(40, dtype=np.uint8) * 6, (30, 1))))
        rgba.save(path, "PNG")
    elif kind == "palette_png":
        rgb.convert("P", palette=Image.ADAPTIVE, colors=16).save(path, "PNG")
    elif kind == "truncated":
        Image.fromarray(_pixels(seed, (64, 64))).save(path, "JPEG", quality=95)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "not_an_image":
        path.write_text("this is not an image\n")
    else:
        raise ValueError(kind)
    return path


# Image kinds per image number: quirks mixed in with ordinary files.
KINDS = ["rgb", "gray", "cmyk", "rgba_png", "palette_png", "rgb", "rgb", "rgb", "truncated", "rgb", "rgb", "rgb"]


def _names() -> list[str]:
    return [f"{1000 + i}_img.{'png' if 'png' in k else 'jpg'}" for i, k in enumerate(KINDS)]


def expected(rows_missing: int, missing_images: int, unreadable: int = 1, **more: int) -> dict[str, int]:
    counts = {"rows_missing_image": rows_missing, "missing_images": missing_images, "rows_malformed": 0,
              "empty_captions": 0, "unreadable_images": unreadable, "images_without_captions": 0, "unreadable_tars": 0,
              "oversized_images": 0, "captions_not_utf8": 0}
    counts.update(more)
    return counts


def flickr8k_kaggle(root: Path) -> dict[str, int]:
    """captions.txt (CSV, CRLF line ends, quoted commas and quotes) + Images/."""
    names = _names()
    for i, (name, kind) in enumerate(zip(names, KINDS)):
        write_image(root / "Images" / name, kind, seed=i)
    lines = ["image,caption"]
    for name in names:
        for c in CAPTIONS:
            lines.append(f'{name},"{c.replace(chr(34), chr(34) * 2)}"')
    lines += ['9999_missing.jpg,"a row naming a file that does not exist"'] * 2
    lines.append('1000_img.jpg,"   "')  # empty after clean-up
    (root / "captions.txt").write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))
    return expected(rows_missing=2, missing_images=1, empty_captions=1)


def flickr8k_original(root: Path) -> dict[str, int]:
    """Flickr8k.token.txt (NAME#k<TAB>caption, CRLF), split files, Flicker8k_Dataset/."""
    names = _names()
    for i, (name, kind) in enumerate(zip(names, KINDS)):
        write_image(root / "Flicker8k_Dataset" / name, kind, seed=i)
    text = root / "Flickr8k_text"
    text.mkdir(parents=True)
    lines = [f"{name}#{k}\t{c}" for name in names for k, c in enumerate(CAPTIONS)]
    lines.append("2258277193_586949ec62.jpg.1#0\tA row of the real file that names no image .")
    lines.append("a line without a tab")
    (text / "Flickr8k.token.txt").write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))
    (text / "Flickr_8k.trainImages.txt").write_text("\n".join(names[:8]) + "\n")
    (text / "Flickr_8k.devImages.txt").write_text("\n".join(names[8:10]) + "\n")
    (text / "Flickr_8k.testImages.txt").write_text("\n".join(names[10:]) + "\n")
    return expected(rows_missing=1, missing_images=1, rows_malformed=1)


def flickr8k_karpathy(root: Path) -> dict[str, int]:
    """dataset_flickr8k.json beside Images/."""
    names = _names()
    for i, (name, kind) in enumerate(zip(names, KINDS)):
        write_image(root / "Images" / name, kind, seed=i)
    splits = ["train"] * 7 + ["restval", "val", "val", "test", "test"]
    images = [{"filename": n, "split": s, "sentences": [{"raw": c, "tokens": c.split()} for c in CAPTIONS]}
              for n, s in zip(names, splits)]
    images.append({"filename": "gone.jpg", "split": "train", "sentences": [{"raw": "missing"}]})
    (root / "dataset_flickr8k.json").write_text(json.dumps({"images": images, "dataset": "flickr8k"}))
    return expected(rows_missing=1, missing_images=1)


def coco(root: Path, year: int = 2017) -> dict[str, int]:
    """annotations/captions_{train,val}YEAR.json + trainYEAR/ + valYEAR/; 5-7 captions per image."""
    names = _names()
    expect = expected(rows_missing=0, missing_images=0)
    for split, chunk in (("train", range(0, 9)), ("val", range(9, 12))):
        images, anns = [], []
        for i in chunk:
            file_name = f"{i:012d}.{'png' if 'png' in KINDS[i] else 'jpg'}"
            write_image(root / f"{split}{year}" / file_name, KINDS[i], seed=i)
            images.append({"id": i, "file_name": file_name, "height": 30, "width": 40})
            for k in range(5 + i % 3):
                anns.append({"id": len(anns), "image_id": i, "caption": CAPTIONS[k % 5] + f" {k}"})
        images.append({"id": 500, "file_name": f"{split}_gone.jpg"})
        anns.append({"id": len(anns), "image_id": 500, "caption": "an image that is not on disk"})
        anns.append({"id": len(anns), "caption": "an annotation without an image id"})
        expect["rows_missing_image"] += 1
        expect["missing_images"] += 1
        expect["rows_malformed"] += 1
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"captions_{split}{year}.json").write_text(
            json.dumps({"images": images, "annotations": anns}, ensure_ascii=False))
    del names
    return expect


CUB_CLASSES = ("001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross")


def cub(root: Path) -> dict[str, int]:
    """CUB_200_2011/images/CLASS/NAME.jpg + images.txt + bounding_boxes.txt + text/CLASS/NAME.txt (10 lines)."""
    cub_dir = root / "CUB_200_2011"
    index, boxes = [], []
    k = 0
    for c, cls in enumerate(CUB_CLASSES):
        for j in range(4):
            name = f"{cls.split('.')[1]}_{j:04d}_{c}{j}"
            kind = "truncated" if (c, j) == (1, 3) else ("gray" if j == 1 else "rgb")
            write_image(cub_dir / "images" / cls / f"{name}.jpg", kind, seed=k)
            k += 1
            index.append(f"{k} {cls}/{name}.jpg")
            boxes.append(f"{k} 5.0 4.0 20.0 18.0")
            text = root / "text" / cls / f"{name}.txt"
            text.parent.mkdir(parents=True, exist_ok=True)
            text.write_bytes(("\r\n".join(f"this bird number {k} has caption {t}" for t in range(10)) + "\r\n").encode())
    (root / "text" / CUB_CLASSES[0] / "Orphan_0001.txt").write_text("a caption whose image is missing\n")
    (cub_dir / "images.txt").write_text("\n".join(index) + "\n")
    (cub_dir / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    return expected(rows_missing=1, missing_images=1)


def folder(root: Path) -> dict[str, int]:
    """Images with same-named .txt files (several lines = several captions), quirks included."""
    for i, kind in enumerate(KINDS):
        image = write_image(root / ("sub" if i % 2 else ".") / f"photo_{i}.{'png' if 'png' in kind else 'jpg'}",
                            kind, seed=i)
        image.with_suffix(".txt").write_bytes(f"{CAPTIONS[i % 5]}\r\nsecond caption {i}\r\n".encode())
    (root / "lonely.txt").write_text("a caption file without its image\n")
    write_image(root / "uncaptioned.jpg", "rgb", seed=99)
    return expected(rows_missing=1, missing_images=1, images_without_captions=1)


def manifest(root: Path, kind: str = "jsonl") -> tuple[Path, dict[str, int]]:
    for i, k in enumerate(KINDS):
        write_image(root / "imgs" / f"m{i}.{'png' if 'png' in k else 'jpg'}", k, seed=i)
    rows = [(f"imgs/m{i}.{'png' if 'png' in k else 'jpg'}", CAPTIONS[i % 5]) for i, k in enumerate(KINDS)]
    rows.append(("imgs/nowhere.jpg", "points nowhere"))
    if kind == "jsonl":
        path = root / "manifest.jsonl"
        lines = [json.dumps({"image": im, "caption": c}, ensure_ascii=False) for im, c in rows]
        lines.append("{not json")
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path, expected(rows_missing=1, missing_images=1, rows_malformed=1)
    path = root / "manifest.csv"
    lines = ["image,caption"] + [f'{im},"{c.replace(chr(34), chr(34) * 2)}"' for im, c in rows]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))
    return path, expected(rows_missing=1, missing_images=1)


class RecordCaptionIds:
    """A Lightning callback (built lazily so this module imports without Lightning) that writes the
    caption ids each rank trained on to ``out_dir/caption_ids_rank{R}.json``."""

    def __new__(cls, out_dir: str):
        import lightning as L

        class _Record(L.Callback):
            def __init__(self):
                self.ids: list[int] = []

            def on_train_batch_start(self, trainer, module, batch, batch_idx):
                self.ids += [int(i) for i in batch["caption_id"]]

            def on_train_end(self, trainer, module):
                path = Path(out_dir) / f"caption_ids_rank{trainer.global_rank}.json"
                path.write_text(json.dumps({"ids": self.ids, "sampler": type(trainer.train_dataloader.sampler).__name__}))

        return _Record()
