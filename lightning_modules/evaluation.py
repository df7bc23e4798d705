"""evaluate.py's work: generate with the EMA generator for a split's captions, score, write metrics.json.

Images are generated and scored batch by batch (real images are read the same way), so 30,000
samples at 256x256 need no more memory than one batch. With ``devices=N`` (Lightning Fabric, DDP)
each process takes every N-th sample; what the metrics need (oracle predictions and features,
Inception features, CLIP scores) is gathered, and rank 0 computes and writes. Noise is drawn per
sample index, so the numbers do not depend on the number of processes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from omegaconf import DictConfig, OmegaConf

from lightning_modules.files import write_text
from lightning_modules.loading import load_module
from lightning_modules.metrics import (
    MetricsError,
    fid,
    file_sha256,
    inception_features,
    inception_score,
    kid,
    load_inception,
    load_real_features,
    store_real_features,
)
from lightning_modules.sampling import Noise, sample_noise, seed_for

METRICS = ("caption_accuracy", "fid", "kid", "is", "clip_score")


@dataclass
class EvalSet:
    """The captions to generate for, the real image of each, and (shapes) the scene each describes."""

    captions: list[str]
    image: Callable[[int], torch.Tensor]  # real image i, [3,S,S] in [-1,1]
    scenes: list | None = None

    def __len__(self) -> int:
        return len(self.captions)

    def images(self, indices) -> torch.Tensor:
        return torch.stack([self.image(int(i)) for i in indices])


def eval_set(datamodule, split: str, n: int) -> EvalSet:
    """``n`` captions of a split (shapes: scenes of the split; real data: the first caption of each image)."""
    from datamodules.shapes import ShapesDataModule, ShapesDataset

    if isinstance(datamodule, ShapesDataModule):
        base = datamodule.datasets[split]
        dataset = ShapesDataset(split=split, length=max(base.length, n), image_size=base.image_size, seed=base.seed,
                                min_objects=base.min_objects, max_objects=base.max_objects)
        samples = [dataset.sample(i) for i in range(n)]
        return EvalSet([c for _, c in samples], lambda i: dataset[i]["image"], [s for s, _ in samples])
    datamodule.setup("fit")
    dataset = datamodule.datasets[split]
    picks = [int(j) for j in dataset.first_caption[: min(n, dataset.num_images)]]
    return EvalSet([dataset.captions[j] for j in picks], lambda i: dataset.load_image(int(dataset.image_of[picks[i]])))


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


class Scorers:
    """What each wanted metric needs from a batch of (fake, real) images, as per-sample tensors."""

    def __init__(self, wanted: list[str], cfg: DictConfig, device, real_cached: bool):
        self.wanted, self.device = wanted, device
        self.real_cached = real_cached
        if "caption_accuracy" in wanted:
            from datamodules.shapes_oracle import load_or_train

            self.oracle = load_or_train(cfg.cache_dir).to(device)
        if {"fid", "kid", "is"} & set(wanted):
            self.inception = load_inception(cfg.get("inception_weights")).to(device)
        if "clip_score" in wanted:
            from lightning_modules.metrics import load_clip

            model, self.processor = load_clip(cfg.get("clip_model"))
            self.clip = model.to(device)

    @torch.no_grad()
    def __call__(self, fake: torch.Tensor, real: torch.Tensor, captions: list[str]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if "caption_accuracy" in self.wanted:
            from datamodules.shapes_oracle import HEADS, read_scenes

            for name, images in (("fake", fake), ("real", real)):
                images = images.to(self.device)
                preds = read_scenes(self.oracle, images)
                out[f"oracle_pred_{name}"] = torch.stack([preds[k] for k in HEADS], dim=-1)
                out[f"oracle_conf_{name}"] = preds["confidence"]
                out[f"oracle_feat_{name}"] = self.oracle.features(images).double().cpu()
        if hasattr(self, "inception"):
            out["pool_fake"], out["logits_fake"] = inception_features(self.inception, fake)
            if not self.real_cached:
                out["pool_real"], _ = inception_features(self.inception, real)
        if hasattr(self, "clip"):
            from lightning_modules.metrics import clip_scores

            for name, images in (("fake", fake), ("real", real)):
                out[f"clip_{name}"] = clip_scores(images, captions, (self.clip, self.processor))
        return out


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


def evaluate(cfg: DictConfig) -> dict:
    from hydra.utils import instantiate
    from lightning.fabric import Fabric

    wanted = list(cfg.metrics)
    bad = [m for m in wanted if m not in METRICS]
    if bad or not wanted:
        raise MetricsError(f"metrics={wanted}: allowed {list(METRICS)}")
    if {"fid", "kid", "is"} & set(wanted):
        load_inception(cfg.get("inception_weights"))  # fail before any work when the file is missing
    devices = int(cfg.get("devices", 1))
    fabric = Fabric(accelerator="cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                    ("cpu" if cfg.device == "auto" else cfg.device), devices=devices,
                    strategy="ddp" if devices > 1 else "auto")
    fabric.launch()
    module = load_module(cfg.ckpt_path, fabric.device)
    extra = OmegaConf.to_container(cfg.data, resolve=True) if cfg.get("data") else {}
    data_cfg = {**module.run_config["data"], **{k: v for k, v in extra.items() if v is not None}}
    data_cfg.update(num_workers=0)
    if "max_val_images" in data_cfg:
        data_cfg["max_val_images"] = None  # evaluation may use the whole split
    data = eval_set(instantiate(OmegaConf.create(data_cfg)), cfg.split, int(cfg.num_samples))
    if "caption_accuracy" in wanted and data.scenes is None:
        raise MetricsError("metrics=[caption_accuracy] needs a checkpoint trained on data=shapes")
    n = len(data)
    real_key = {"data": data_cfg.get("_target_"), "root": str(data_cfg.get("root")), "split": cfg.split, "n": n,
                "size": int(data_cfg.get("image_size")), "seed": data_cfg.get("seed")}
    real_pool = None
    if {"fid", "kid"} & set(wanted):
        real_pool = load_real_features(real_key, cfg.cache_dir, cfg.inception_weights)
    real_cached = bool(fabric.broadcast(real_pool is not None, src=0))  # every rank gathers the same keys
    scorers = Scorers(wanted, cfg, fabric.device, real_cached=real_cached)

    mine = list(range(fabric.global_rank, n, fabric.world_size))
    parts: dict[str, list[torch.Tensor]] = {}
    batch = int(cfg.batch_size)
    for start in range(0, len(mine), batch):
        idx = mine[start : start + batch]
        captions = [data.captions[i] for i in idx]
        fake = generate_for(module, captions, batch, int(cfg.seed), indices=idx)
        for key, value in scorers(fake, data.images(idx), captions).items():
            parts.setdefault(key, []).append(value)
    shard = {k: torch.cat(v) for k, v in parts.items()}
    every = gather_in_order(fabric, shard, n)
    if fabric.global_rank != 0:
        return {}

    results: dict[str, float] = {}
    protocol = {"ckpt_path": str(cfg.ckpt_path), "samples": n, "real_split": cfg.split, "real_images": n,
                "image_size": real_key["size"], "generator": "EMA", "processes": fabric.world_size,
                "captions": "shapes scenes of the split" if data.scenes else "first caption of each image",
                "noise": "per sample index", "seed": int(cfg.seed)}
    if "caption_accuracy" in wanted:
        from datamodules.shapes_oracle import HEADS, frechet_distance, renderer_digest, scores_from_predictions

        def preds(name: str) -> dict[str, torch.Tensor]:
            labels = every[f"oracle_pred_{name}"]
            return {**{k: labels[..., i] for i, k in enumerate(HEADS)}, "confidence": every[f"oracle_conf_{name}"]}

        results.update({f"caption_accuracy/{k}": v for k, v in scores_from_predictions(preds("fake"), data.scenes).items()})
        results["caption_accuracy/real_reference"] = scores_from_predictions(preds("real"), data.scenes)["caption"]
        results["oracle_fd"] = frechet_distance(every["oracle_feat_real"], every["oracle_feat_fake"])
        protocol["oracle"] = {"renderer_digest": renderer_digest(), "input": "32x32, area resize"}
    if {"fid", "kid", "is"} & set(wanted):
        if {"fid", "kid"} & set(wanted):
            if real_pool is None:
                real_pool = every["pool_real"]
                store_real_features(real_pool, real_key, cfg.cache_dir, cfg.inception_weights)
            if "fid" in wanted:
                results["fid"] = fid(real_pool, every["pool_fake"])
            if "kid" in wanted:
                results["kid"], results["kid_std"] = kid(real_pool, every["pool_fake"])
        if "is" in wanted:
            results["is"], results["is_std"] = inception_score(every["logits_fake"])
        protocol["inception"] = {"model": "inception-v3-compat (torchmetrics NoTrainInceptionV3)",
                                 "resize": "TF1-style bilinear to 299, no antialias", "input": "uint8",
                                 "weights_sha256": file_sha256(cfg.inception_weights),
                                 "real_features": "cached per data set, split, count and size"}
    if "clip_score" in wanted:
        results["clip_score"] = float(every["clip_fake"].mean())
        results["clip_score_real"] = float(every["clip_real"].mean())
        protocol["clip"] = {"model": str(cfg.clip_model), "definition": "mean of max(100 * cos(image, caption), 0)",
                            "resize": "the CLIP processor's"}
    report = {"metrics": results, "protocol": protocol}
    write_text(Path(cfg.out_dir) / "metrics.json", json.dumps(report, indent=2))
    _print_table(results, protocol)
    return report


def _print_table(results: dict[str, float], protocol: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{protocol['samples']} samples vs {protocol['real_split']} split, {protocol['image_size']}px")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in results.items():
        table.add_row(key, f"{value:.4f}")
    Console().print(table)
