"""evaluate.py's work: generate with the EMA generator for a split's captions, score, write metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from lightning_modules.generation import GenerationError, load_module
from lightning_modules.metrics import MetricsError, file_sha256, fid, inception_features, inception_score, kid, load_inception
from lightning_modules.sampling import sample_noise, seed_for

METRICS = ("caption_accuracy", "fid", "kid", "is")
NOISE_EVAL = 11


def real_set(datamodule, split: str, n: int) -> tuple[torch.Tensor, list[str], list | None]:
    """(real images [N,3,S,S], their captions, shapes scenes or None) from a data module's split."""
    from datamodules.shapes import ShapesDataModule, ShapesDataset

    if isinstance(datamodule, ShapesDataModule):
        base = datamodule.datasets[split]
        dataset = ShapesDataset(split=split, length=max(base.length, n), image_size=base.image_size, seed=base.seed,
                                min_objects=base.min_objects, max_objects=base.max_objects)
        samples = [dataset.sample(i) for i in range(n)]
        images = torch.stack([dataset[i]["image"] for i in range(n)])
        return images, [c for _, c in samples], [s for s, _ in samples]
    datamodule.setup("fit")
    dataset = datamodule.datasets[split]
    count = min(n, dataset.num_images)
    picks = [int(j) for j in dataset.first_caption[:count]]  # one (first) caption per image
    images = torch.stack([dataset.load_image(int(dataset.image_of[j])) for j in picks])
    return images, [dataset.captions[j] for j in picks], None


@torch.no_grad()
def generate_for(module, captions: list[str], batch_size: int, seed: int) -> torch.Tensor:
    out = []
    for start in range(0, len(captions), batch_size):
        chunk = captions[start : start + batch_size]
        z = sample_noise(len(chunk), module.z_dim, seed=seed_for(seed, NOISE_EVAL, start)).to(module.device)
        out.append(module.generator_ema(z, module.encode(chunk)).clamp(-1, 1).cpu())
    return torch.cat(out)


def evaluate(cfg: DictConfig) -> dict:
    wanted = list(cfg.metrics)
    bad = [m for m in wanted if m not in METRICS]
    if bad or not wanted:
        raise MetricsError(f"metrics={wanted}: allowed {list(METRICS)}")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    try:
        module = load_module(cfg.ckpt_path, device)
    except GenerationError as err:
        raise MetricsError(str(err)) from err
    extra = cfg.get("data")
    data_cfg = {**module.run_config["data"], **(OmegaConf.to_container(extra, resolve=True) if extra else {})}
    data_cfg.update(num_workers=0)
    from hydra.utils import instantiate

    real, captions, scenes = real_set(instantiate(OmegaConf.create(data_cfg)), cfg.split, int(cfg.num_samples))
    fake = generate_for(module, captions, int(cfg.batch_size), int(cfg.seed))
    results: dict[str, float] = {}
    protocol = {"ckpt_path": str(cfg.ckpt_path), "samples": len(captions), "real_split": cfg.split,
                "real_images": len(captions), "image_size": int(fake.shape[-1]), "generator": "EMA",
                "captions": "shapes scenes of the split" if scenes else "first caption of each image", "seed": int(cfg.seed)}
    if "caption_accuracy" in wanted:
        if scenes is None:
            raise MetricsError("metrics=[caption_accuracy] needs a checkpoint trained on data=shapes")
        from datamodules.shapes_oracle import caption_scores, frechet_distance, load_or_train, renderer_digest

        oracle = load_or_train(cfg.cache_dir)
        results.update({f"caption_accuracy/{k}": v for k, v in caption_scores(oracle, fake, scenes).items()})
        results["caption_accuracy/real_reference"] = caption_scores(oracle, real, scenes)["caption"]
        results["oracle_fd"] = frechet_distance(oracle.features(real), oracle.features(fake))
        protocol["oracle"] = {"renderer_digest": renderer_digest(), "input": "32x32, area resize"}
    if {"fid", "kid", "is"} & set(wanted):
        inception = load_inception(cfg.get("inception_weights")).to(device)
        real_pool, _ = inception_features(inception, real)
        fake_pool, fake_logits = inception_features(inception, fake)
        if "fid" in wanted:
            results["fid"] = fid(real_pool, fake_pool)
        if "kid" in wanted:
            results["kid"], results["kid_std"] = kid(real_pool, fake_pool)
        if "is" in wanted:
            results["is"], results["is_std"] = inception_score(fake_logits)
        protocol["inception"] = {"model": "inception-v3-compat (torchmetrics NoTrainInceptionV3)",
                                 "resize": "TF1-style bilinear to 299, no antialias", "input": "uint8",
                                 "weights_sha256": file_sha256(cfg.inception_weights)}
    report = {"metrics": results, "protocol": protocol}
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".metrics.json.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(out / "metrics.json")
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
