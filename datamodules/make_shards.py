"""Write any gan-ga data source as litdata shards: ``python -m datamodules.make_shards data=SOURCE out=DIR``.

Examples:
    python -m datamodules.make_shards data=coco data.root=/data/coco out=/shared/shards/coco
    python -m datamodules.make_shards data=folder data.root=my_images out=shards/mine
    python -m datamodules.make_shards data=shapes data.train_size=20000 out=shards/shapes

The source is read exactly as training reads it (its splits, skipped files counted and reported);
then ``data=shards data.input_dir=DIR`` trains on the shards. Needs the [stream] extra.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig


def make_shards(cfg: DictConfig) -> dict:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from datamodules.shards import write_shards

    if not cfg.get("out") or str(cfg.out) == "???":
        from gan_ga_utils.errors import ConfigError

        raise ConfigError("out is not set: pass out=DIR (a new folder for the shards)")
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    data_cfg["num_workers"] = 0
    datamodule = instantiate(OmegaConf.create(data_cfg))
    datamodule.setup("fit")
    source = {"data": {k: v for k, v in data_cfg.items() if k not in ("report_dir", "cache_dir")}}
    manifest = write_shards(datamodule, cfg.out, source=source, chunk_bytes=str(cfg.chunk_bytes))
    sizes = ", ".join(f"{split} {info['images']}" for split, info in manifest["splits"].items())
    print(f"wrote shards to {cfg.out}: {sizes} images; skipped in the source: {manifest['skipped'] or 'nothing'}")
    return manifest


@hydra.main(version_base="1.3", config_path="../conf", config_name="make_shards")
def main(cfg: DictConfig) -> None:
    from gan_ga_utils.cli import run_or_exit

    run_or_exit(make_shards, cfg)


if __name__ == "__main__":
    main()
