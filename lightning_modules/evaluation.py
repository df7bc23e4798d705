"""evaluate.py's work: generate with the EMA generator for a split's captions, score, write metrics.json.

The evaluation set is ``num_samples`` images of the split, chosen at random with the evaluation
seed (all of them when the split has no more) and kept in split order, one caption each: the first
caption of each image, or the scene's caption on shapes (whose split is extended with further
i.i.d. scenes when more samples are asked for than it holds). Images are generated and scored batch
by batch (real images are read the same way), so 30,000 samples at 256x256 need no more memory than
one batch. With ``devices=N`` (Lightning Fabric, DDP) each process takes every N-th sample; the
per-sample tensors the metrics need are gathered, and rank 0 computes and writes. Noise is drawn
per sample index, so the numbers do not depend on the number of processes.

evaluate.py writes into ``out_dir`` (``metrics.json``, the data report of real data sets) and into
the caches under ``cache_dir``; never into the training run it reads.

With ``folders=[REAL_DIR,GENERATED_DIR]`` instead of ``ckpt_path`` it scores two folders of images
(:func:`evaluate_folders`): FID and KID between them, IS of the second, read as torch-fidelity reads
a folder, so the numbers equal its command line's on the same weights file.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from gan_ga_utils.errors import ConfigError, DataError, MetricsError
from gan_ga_utils.files import write_text
from lightning_modules.loading import load_module
from lightning_modules.metrics import Context, Readers, auto, block_keys, compute, read_rows, resolve, wanted
from lightning_modules.metrics.inception import (
    check_weights,
    load_real_features,
    real_features_key,
    store_real_features,
)
from lightning_modules.sampling import Noise, sample_noise, seed_for

SUBSET_RULE = "random images of the split without replacement, seeded, kept in split order; all when it has no more"
FOLDER_SUFFIXES = (".png", ".jpg", ".jpeg")  # torch-fidelity's samples_find_ext
FOLDER_READ = ("the folder's .png/.jpg/.jpeg files (any case), not recursive, sorted by name; PIL convert('RGB') to "
               "uint8, fed unchanged to the Inception (its own resize to 299 only), as torch-fidelity reads a folder")


@dataclass
class EvalSet:
    """The captions to generate for, the real image of each, and (shapes) the scene each describes."""

    captions: list[str]
    image: Callable[[int], torch.Tensor]  # real image of caption k, [3,S,S] in [-1,1]
    scenes: list | None = None
    subset: dict = field(default_factory=dict)  # how the split's images were chosen (metrics.json)
    blocks: dict | None = None  # shapes: (start, stop) of "main" and the diversity blocks "open", "spread"
    labels: dict[str, list[str]] | None = None  # real data with data.label_columns: each caption's image's labels

    def __len__(self) -> int:
        return len(self.captions)

    def images(self, indices) -> torch.Tensor:
        return torch.stack([self.image(int(i)) for i in indices])


def subset(total: int, n: int, seed: int) -> list[int]:
    """``n`` of ``range(total)`` at random (seeded), in increasing order; all of them when ``n >= total``."""
    if n >= total:
        return list(range(total))
    rng = np.random.default_rng(seed_for(seed, Noise.EVAL_SUBSET))
    return sorted(int(i) for i in rng.choice(total, size=n, replace=False))


def eval_set(datamodule, split: str, n: int, seed: int, diversity: bool = True) -> EvalSet:
    """``n`` captions of a split and their real images: see the module's docstring. On shapes, with
    ``diversity``, the diversity blocks follow (``metrics/caption_accuracy.py``): each of their
    prompts ``PER_PROMPT`` times, the real image of each a fresh render of what the prompt describes."""
    from datamodules.shapes import ShapesDataModule, redraw, render_tensor

    if isinstance(datamodule, ShapesDataModule):
        from lightning_modules.metrics.caption_accuracy import PER_PROMPT, diversity_prompts

        base = datamodule.datasets[split]
        dataset = base.with_length(max(base.length, n))  # its class: relation scenes too (shapes_pairs.py)
        picks = subset(dataset.length, n, seed)
        samples = [dataset.sample(i) for i in picks]
        blocks = {"main": (0, len(samples))}
        for name, prompts in (diversity_prompts(dataset) if diversity else {}).items():
            start = len(samples)
            samples += [(s, c) for s, c in prompts for _ in range(PER_PROMPT)]
            blocks[name] = (start, len(samples))

        def image(k: int) -> torch.Tensor:
            if k < len(picks):
                return dataset[picks[k]]["image"]
            scene = redraw(samples[k][0], np.random.default_rng([seed, Noise.EVAL, k]))
            return render_tensor(scene, dataset.image_size)

        return EvalSet([c for _, c in samples], image, [s for s, _ in samples],
                       {"rule": SUBSET_RULE, "seed": seed, "split_images": base.length,
                        **({"diversity": f"{PER_PROMPT} samples of each prompt of the blocks {list(blocks)[1:]}"}
                           if diversity else {})},
                       blocks if diversity else None)
    datamodule.setup("fit")
    dataset = datamodule.datasets[split]
    images = subset(dataset.num_images, n, seed)
    picks = [int(dataset.first_caption[i]) for i in images]
    columns = getattr(datamodule, "label_columns", None)
    labels = {c: [dataset.records[i].labels[c] for i in images] for c in columns} if columns else None
    return EvalSet([dataset.captions[j] for j in picks], lambda k: dataset.load_image(images[k]),
                   subset={"rule": SUBSET_RULE, "seed": seed, "split_images": dataset.num_images}, labels=labels)


@torch.no_grad()
def generate_for(module, captions: list[str], batch_size: int, seed: int, indices=None) -> torch.Tensor:
    """EMA images for ``captions``; sample ``indices[k]`` (default ``k``) always gets the same noise."""
    indices = list(range(len(captions))) if indices is None else list(indices)
    out = []
    for start in range(0, len(captions), batch_size):
        chunk = captions[start : start + batch_size]
        z = torch.cat([sample_noise(1, module.z_dim, seed=seed_for(seed, Noise.EVAL, int(i)))
                       for i in indices[start : start + batch_size]]).to(module.device)
        out.append(module.generate_ema(z, module.encode(chunk)).clamp(-1, 1).cpu())
    return torch.cat(out)


def gather_in_order(fabric, shard: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    """Per-rank tensors of samples ``rank, rank+world, ...`` -> all samples in index order."""
    world = fabric.world_size
    if world == 1:
        return shard
    per_rank = math.ceil(n / world)
    out = {}
    for key, value in shard.items():
        padded = torch.zeros((per_rank, *value.shape[1:]), dtype=value.dtype)
        padded[: value.shape[0]] = value
        gathered = fabric.all_gather(padded.to(fabric.device)).cpu()  # [world, per_rank, ...]
        out[key] = gathered.transpose(0, 1).reshape(world * per_rank, *value.shape[1:])[:n]
    return out


def eval_data_config(run_data: dict, cfg: DictConfig) -> dict:
    """The training run's data config with evaluate.py's overrides (``data.root`` ...): the loader in
    this process, the whole split, the data report in evaluate.py's own folder and caches under its
    ``cache_dir``."""
    extra = OmegaConf.to_container(cfg.data, resolve=True) if cfg.get("data") else {}
    data = {**run_data, **{k: v for k, v in extra.items() if v is not None}}
    data["num_workers"] = 0
    if "max_val_images" in data:
        data["max_val_images"] = None
    if "report_dir" in data:
        data["report_dir"] = str(cfg.out_dir)
    if "cache_dir" in data:  # evaluate.py writes only under its own folders, never where a file points
        data["cache_dir"] = str(Path(cfg.cache_dir) / str(data.get("name") or "data"))
    return data


def accelerator(cfg: DictConfig) -> str:
    """``device=auto``: the GPU when there is one, else the CPU; any other value as given."""
    if cfg.device != "auto":
        return str(cfg.device)
    return "cuda" if torch.cuda.is_available() else "cpu"


def _resolved(names, cfg: DictConfig) -> list:
    """The registry's metrics of ``names``; the Inception weights file checked when one reads it."""
    metrics = resolve(names)
    if any(m.reader == "inception" for m in metrics):
        check_weights(cfg.get("inception_weights"))
    return metrics


def evaluate(cfg: DictConfig) -> dict:
    from hydra.utils import instantiate
    from lightning.fabric import Fabric

    folders, ckpt = cfg.get("folders"), cfg.get("ckpt_path")
    if folders is not None and ckpt is not None:
        raise ConfigError(f"ckpt_path={ckpt} and folders={folders} are both set: evaluate.py scores a checkpoint "
                          "or two image folders; drop one of them")
    if folders is not None:
        return evaluate_folders(cfg)
    if ckpt is None:
        raise ConfigError("ckpt_path is not set: pass ckpt_path=RUN/checkpoints/best.ckpt, or "
                          "folders=[REAL_DIR,GENERATED_DIR] to score two image folders")
    # named metrics fail before any work (a missing Inception file); metrics=auto once the data is known
    metrics = None if cfg.metrics == "auto" else _resolved(cfg.metrics, cfg)
    devices = int(cfg.get("devices", 1))
    fabric = Fabric(accelerator=accelerator(cfg), devices=devices, strategy="ddp" if devices > 1 else "auto")
    fabric.launch()
    module = load_module(cfg.ckpt_path, fabric.device)
    data_cfg = eval_data_config(module.run_config["data"], cfg)
    seed = int(cfg.seed)
    datamodule = instantiate(OmegaConf.create(data_cfg))
    if metrics is None:
        names = auto(datamodule, cfg.get("inception_weights"))
        if not names:
            raise MetricsError("metrics=auto finds nothing to compute for this run's data (not shapes, no "
                               "data.label_columns, no inception_weights): pass metrics=[fid,kid,is] with "
                               "inception_weights=FILE, metrics=[clip_score] with clip_model=..., or set "
                               "data.label_columns")
        metrics = _resolved(names, cfg)
    data = eval_set(datamodule, cfg.split, int(cfg.num_samples), seed, diversity=any(m.reads_blocks for m in metrics))
    if any(m.name == "caption_accuracy" for m in metrics) and data.scenes is None:
        raise MetricsError("metrics=[caption_accuracy] needs a checkpoint trained on data=shapes")
    readers = Readers(metrics, cache_dir=cfg.cache_dir, inception_weights=cfg.get("inception_weights"),
                      clip_model=cfg.get("clip_model"), dist=fabric, datamodule=datamodule).to(fabric.device)
    context = readers.context(seed, data)
    n = len(data)
    main = data.blocks["main"][1] if data.blocks else n  # the split's captions come first, the diversity blocks after
    fake_keys, real_keys = wanted(metrics, "fake"), wanted(metrics, "real")
    fake_blocks, real_blocks = block_keys(metrics, "fake"), block_keys(metrics, "real")
    real_key = real_features_key(data_cfg, split=cfg.split, count=main, subset_seed=seed,
                                 image_size=data_cfg["image_size"])
    real_pool = load_real_features(real_key, cfg.cache_dir, cfg.inception_weights) if "pool" in real_keys else None
    if fabric.broadcast(real_pool is not None, src=0):  # every rank gathers the same keys
        real_keys = real_keys - {"pool"}

    mine = list(range(fabric.global_rank, n, fabric.world_size))
    parts: dict[str, list[torch.Tensor]] = {}
    batch = int(cfg.batch_size)
    for start in range(0, len(mine), batch):
        idx = mine[start : start + batch]
        captions = [data.captions[i] for i in idx]
        fake = generate_for(module, captions, batch, seed, indices=idx)
        main_rows = sum(i < main for i in idx)  # idx is increasing: the main part's rows come first
        read = {f"fake/{k}": v for k, v in read_rows(readers, fake, captions, fake_keys, fake_blocks, main_rows).items()}
        if real_keys:
            read.update({f"real/{k}": v for k, v in read_rows(readers, data.images(idx), captions, real_keys,
                                                               real_blocks, main_rows).items()})
        for key, value in read.items():
            parts.setdefault(key, []).append(value)
    # a key read of the blocks too has n rows, any other the main part's rows; each rank holds its share
    shards = {k: torch.cat(v) for k, v in parts.items()}
    every = gather_in_order(fabric, {k: v for k, v in shards.items() if k.split("/", 1)[1] in fake_blocks | real_blocks}, n)
    every.update(gather_in_order(fabric, {k: v for k, v in shards.items()
                                          if k.split("/", 1)[1] not in fake_blocks | real_blocks}, main))
    if fabric.global_rank != 0:
        return {}

    fake = {k.removeprefix("fake/"): v for k, v in every.items() if k.startswith("fake/")}
    real = {k.removeprefix("real/"): v for k, v in every.items() if k.startswith("real/")}
    if real_pool is not None:
        real["pool"] = real_pool
    elif "pool" in real:
        store_real_features(real["pool"], real_key, cfg.cache_dir, cfg.inception_weights)
    results = compute(metrics, fake, real, context)
    protocol = {"ckpt_path": str(cfg.ckpt_path), "samples": main, "diversity_samples": n - main, "real_split": cfg.split, "real_images": main,
                "image_size": int(data_cfg["image_size"]), "generator": "EMA", "processes": fabric.world_size,
                "captions": "the scene's caption (shapes)" if data.scenes else "the first caption of each image",
                "subset": data.subset, "noise": "per sample index", "seed": seed,
                "metrics": {m.name: m.protocol for m in metrics}, **readers.protocol()}
    if "inception" in protocol:
        protocol["inception"]["real_features"] = ("cached per data config, split, count, subset seed, size and "
                                                  "weights file (cache_dir/inception_real/)")
    report = {"metrics": results, "protocol": protocol}
    write_text(Path(cfg.out_dir) / "metrics.json", json.dumps(report, indent=2))
    _print_table(results, f"{main} samples vs {cfg.split} split, {protocol['image_size']}px")
    return report


def folder_files(folder: str | Path, key: str) -> list[Path]:
    """The images of a folder as torch-fidelity finds them (:data:`FOLDER_SUFFIXES`, not recursive,
    sorted); a DataError naming ``key`` when the folder is missing or holds none."""
    path = Path(folder)
    if not path.is_dir():
        raise DataError(f"{key}={str(folder)!r}: no such folder; pass an existing folder of PNG/JPEG images")
    files = sorted((p for p in path.iterdir() if p.suffix.lower() in FOLDER_SUFFIXES and p.is_file()),
                   key=lambda p: p.name)
    if not files:
        raise DataError(f"{key}={str(folder)!r}: no .png/.jpg/.jpeg image in this folder (subfolders are not read); "
                        "pass a folder that holds the images")
    return files


def read_folder(readers: Readers, files: list[Path], keys: set[str], batch_size: int,
                device) -> dict[str, torch.Tensor]:
    """``readers.read`` of the images in ``files``, batch by batch, as uint8 RGB (images of one size
    per Inception call: a folder may mix sizes, the Inception resizes each to 299)."""
    from PIL import Image

    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(files), batch_size):
        pixels = []
        for path in files[start : start + batch_size]:
            try:
                with Image.open(path) as image:
                    pixels.append(torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1))
            except OSError as err:  # not an image, truncated: the folder's set of images is not what it says
                raise DataError(f"{path}: cannot be read as an image ({err}); replace or remove it") from err
        for _, same in itertools.groupby(pixels, key=lambda p: p.shape):
            for key, value in readers.read(torch.stack(list(same)).to(device), [], keys).items():
                parts.setdefault(key, []).append(value)
    return {k: torch.cat(v) for k, v in parts.items()}


def evaluate_folders(cfg: DictConfig) -> dict:
    """FID / KID between ``folders=[REAL_DIR,GENERATED_DIR]`` and IS of the second, no checkpoint:
    the images go through the same Inception path as generated images, unchanged (:data:`FOLDER_READ`)."""
    from lightning.fabric import Fabric

    folders = list(cfg.folders) if OmegaConf.is_list(cfg.folders) else [cfg.folders]
    if len(folders) != 2:
        raise ConfigError(f"folders={folders}: give two image folders, folders=[REAL_DIR,GENERATED_DIR]")
    metrics = resolve(["fid", "kid", "is"] if cfg.metrics == "auto" else cfg.metrics)
    others = [m.name for m in metrics if m.reader != "inception"]
    if others:
        raise MetricsError(f"metrics={others} cannot score image folders (they need a checkpoint, captions or the "
                           "shapes scenes): with folders=[...] use metrics=[fid], [kid] or [is]")
    check_weights(cfg.get("inception_weights"))
    files = [folder_files(folder, f"folders[{i}]") for i, folder in enumerate(folders)]
    device = Fabric(accelerator=accelerator(cfg), devices=1).device
    readers = Readers(metrics, inception_weights=cfg.inception_weights).to(device)
    batch = int(cfg.batch_size)
    real = read_folder(readers, files[0], wanted(metrics, "real"), batch, device) if wanted(metrics, "real") else {}
    fake = read_folder(readers, files[1], wanted(metrics, "fake"), batch, device)
    results = compute(metrics, fake, real, Context(seed=int(cfg.seed)))
    protocol = {"folders": {"real": str(folders[0]), "generated": str(folders[1])},
                "images": {"real": len(files[0]), "generated": len(files[1])}, "read": FOLDER_READ,
                "seed": int(cfg.seed), "metrics": {m.name: m.protocol for m in metrics}, **readers.protocol()}
    report = {"metrics": results, "protocol": protocol}
    write_text(Path(cfg.out_dir) / "metrics.json", json.dumps(report, indent=2))
    _print_table(results, f"{folders[1]} ({len(files[1])} images) vs {folders[0]} ({len(files[0])} images)")
    return report


def _print_table(results: dict[str, float], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in results.items():
        table.add_row(key, f"{value:.4f}")
    Console().print(table)
