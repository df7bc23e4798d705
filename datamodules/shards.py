"""Streaming shards (litdata): any gan-ga data source written once, read back as a data set.

``python -m datamodules.make_shards data=SOURCE out=DIR`` writes::

    DIR/manifest.json        format, source config, per split: where its images start, captions (and CUB
                             boxes) of every image; the skipped counts of the source
    DIR/images/              litdata chunks (index.json + chunk-*.bin): item i = an image file's bytes,
                             the splits one after another (train, val, test)

``data=shards data.input_dir=DIR`` reads them: the records (captions, boxes) come from the manifest,
the image bytes from the chunks, and everything else is the real-data pipeline of ``captions.py``
(crops, flips, one caption per image per epoch, the text cache), so a run on the shards reads the
same (image, caption) batches as a run on the source, with the same seed. The order is gan-ga's own
resumable sampler: a resumed run continues at the next unseen batch, and under DDP every rank reads
an equal, disjoint share. Chunks are read by index (``StreamingDataset[i]``); ``input_dir`` may be a
local folder or a URL litdata streams from (the manifest is then read with fsspec).

The source's images were checked when the shards were written; an image that does not decode from
its chunk now (a damaged copy) is replaced by the next sample, image and caption, counted per
training epoch (``data/skipped_runtime``, the report's ``skipped_runtime``), and training stops
past ``data.max_skipped_fraction``, as for every reader (``captions.py``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image

from datamodules.captions import (
    SPLIT_NAMES,
    CaptionDataModule,
    CaptionedImageDataset,
    DataError,
    ImageCaptions,
    SkipCounts,
    decode,
)
from gan_ga_utils.files import write_text

FORMAT = "gan-ga shards v1"
MANIFEST = "manifest.json"
IMAGES = "images"


def _is_url(path: str) -> bool:
    return "://" in str(path)


def _image_item(source: tuple[int, str | None, bytes | None]) -> dict:
    """litdata ``optimize`` worker: one image's encoded bytes (the file as on disk)."""
    index, path, data = source
    return {"index": index, "image": data if data is not None else Path(path).read_bytes()}


def source_records(datamodule, split: str) -> list[tuple[list[str], list | None, str | None, bytes | None]]:
    """(captions, bbox, file path or None, encoded bytes or None) of every image of a split, in the
    order the source's data set indexes them."""
    dataset = datamodule.datasets[split]
    if isinstance(dataset, CaptionedImageDataset):
        return [(list(r.captions), list(r.bbox) if r.bbox else None, str(r.path), None) for r in dataset.records]
    out = []  # a procedural source (shapes): render each sample once, as PNG
    for i in range(len(dataset)):
        scene, caption = dataset.sample(i)
        from datamodules.shapes import render

        buffer = io.BytesIO()
        render(scene, dataset.image_size).save(buffer, format="PNG")
        out.append(([caption], None, None, buffer.getvalue()))
    return out


def write_shards(datamodule, out: str | Path, *, source: dict, chunk_bytes: str = "64MB") -> dict:
    """Write every split of a set-up data module as shards under ``out``; returns the manifest."""
    from litdata import optimize

    out = Path(out)
    if (out / MANIFEST).exists():
        raise DataError(f"out={str(out)!r} already holds shards ({MANIFEST}); choose a new folder or delete it")
    manifest: dict = {"format": FORMAT, "source": source, "splits": {}}
    inputs = []
    for split in SPLIT_NAMES:
        records = source_records(datamodule, split)
        manifest["splits"][split] = {"start": len(inputs), "images": len(records), "captions": [r[0] for r in records],
                                     "bbox": [r[1] for r in records]}
        inputs += [(len(inputs), path, data) for _, _, path, data in records]
    # one writer process, inputs in order: item i of the chunks is input i
    optimize(fn=_image_item, inputs=inputs, output_dir=str(out / IMAGES), chunk_bytes=chunk_bytes, num_workers=1,
             reorder_files=False, mode="overwrite")
    skips = getattr(datamodule, "skips", None)
    manifest["skipped"] = skips.counts() if skips is not None else {}
    manifest["layout"] = getattr(datamodule, "layout", "")
    write_text(out / MANIFEST, json.dumps(manifest))  # last: a folder without it is incomplete
    return manifest


def read_manifest(input_dir: str) -> dict:
    where = f"{input_dir.rstrip('/')}/{MANIFEST}"
    try:
        if _is_url(input_dir):
            import fsspec

            with fsspec.open(where, "r") as f:
                manifest = json.load(f)
        else:
            manifest = json.loads(Path(where).read_text())
    except FileNotFoundError as err:
        raise DataError(f"data.input_dir={input_dir!r}: no {MANIFEST} (an incomplete or foreign folder); write "
                        "shards with `python -m datamodules.make_shards data=SOURCE out=DIR`") from err
    except (OSError, ValueError) as err:
        raise DataError(f"data.input_dir={input_dir!r}: {where} unreadable ({type(err).__name__}: {err})") from err
    if manifest.get("format") != FORMAT:
        raise DataError(f"{where}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def check_chunks(folder: Path, expected: int) -> None:
    """A local shards folder: litdata's index present and every chunk it lists whole."""
    index_file = folder / "index.json"
    try:
        index = json.loads(index_file.read_text())
    except FileNotFoundError as err:
        raise DataError(f"{index_file}: missing: the shards of this split are incomplete; write them again") from err
    except ValueError as err:
        raise DataError(f"{index_file}: damaged ({err}); write the shards again") from err
    items = 0
    for chunk in index.get("chunks", []):
        path = folder / chunk["filename"]
        if not path.is_file():
            raise DataError(f"{path}: missing shard (listed in {index_file}); copy it back or write the shards again")
        if "chunk_bytes" in chunk and path.stat().st_size < int(chunk["chunk_bytes"]):
            raise DataError(f"{path}: damaged shard ({path.stat().st_size} of {chunk['chunk_bytes']} bytes); "
                            "copy it again or write the shards again")
        items += int(chunk.get("chunk_size", 0))
    if items != expected:
        raise DataError(f"{index_file}: {items} images, the manifest says {expected}; write the shards again")


class ShardImages(CaptionedImageDataset):
    """A split read from shards: records from the manifest, image bytes from litdata chunks."""

    def __init__(self, records: list[ImageCaptions], *, folder: str, start: int = 0, **kwargs):
        super().__init__(records, **kwargs)
        self.folder, self.start = folder, start
        self._stream = None  # opened lazily in each process (DataLoader workers included)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_stream": None}

    def _images(self):
        if self._stream is None:
            from litdata import StreamingDataset

            self._stream = StreamingDataset(input_dir=self.folder, shuffle=False)
        return self._stream

    unreadable_fix = ("the shards are damaged: copy them again, or write them again with "
                      "`python -m datamodules.make_shards data=SOURCE out=DIR`")

    def read_image(self, index: int) -> tuple[Image.Image, float]:
        data = self._images()[self.start + index]["image"]
        return decode(io.BytesIO(data), self.decode_size, self.records[index].bbox, self.max_pixels)

    def describe(self, index: int) -> str:
        return f"{self.folder} item {self.start + index}"


class ShardsDataModule(CaptionDataModule):
    """``data=shards data.input_dir=DIR_OR_URL``: shards written by ``datamodules.make_shards``."""

    name = "shards"

    def __init__(self, *, input_dir: str | None = None, **kwargs):
        if not input_dir or str(input_dir) in ("???", ""):
            raise DataError("data.input_dir is not set: pass data.input_dir=DIR (written by "
                            "`python -m datamodules.make_shards data=SOURCE out=DIR`) or a URL")
        self.input_dir = str(input_dir)
        local = not _is_url(self.input_dir)
        if local and not Path(self.input_dir).is_dir():
            raise DataError(f"data.input_dir={self.input_dir!r}: no such folder")
        kwargs.update(verify_images=False)  # the source was verified when the shards were written
        if kwargs.get("root") is None:  # the shards hold the images; root anchors caches and reports
            kwargs["root"] = self.input_dir if local else (kwargs.get("cache_dir") or ".")
        super().__init__(**kwargs)

    @classmethod
    def where(cls) -> str:
        return "Write shards with `python -m datamodules.make_shards data=SOURCE out=DIR`."

    def images_checked(self) -> str:
        return ("by the source's scan when the shards were written, and when read: images that no longer decode "
                "are counted in skipped_runtime, per training epoch")

    def read(self, skips: SkipCounts) -> dict[str, list[ImageCaptions]]:
        manifest = read_manifest(self.input_dir)
        for reason, n in (manifest.get("skipped") or {}).items():
            if n:
                skips.note(reason, "(counted when the shards were written)", n)
        self.layout = f"shards of {manifest.get('source', {}).get('data', {}).get('_target_', '?')}"
        if not _is_url(self.input_dir):
            check_chunks(Path(self.input_dir) / IMAGES, sum(int(i["images"]) for i in manifest["splits"].values()))
        self.starts = {split: int(info["start"]) for split, info in manifest["splits"].items()}
        splits = {}
        for split, info in manifest["splits"].items():
            splits[split] = [ImageCaptions(path=Path(split) / str(i), captions=list(c), bbox=tuple(b) if b else None)
                             for i, (c, b) in enumerate(zip(info["captions"], info["bbox"]))]
        return splits

    def make_dataset(self, split: str, records: list[ImageCaptions], **kwargs) -> CaptionedImageDataset:
        return ShardImages(records, folder=f"{self.input_dir.rstrip('/')}/{IMAGES}", start=self.starts[split], **kwargs)
