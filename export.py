"""Export a checkpoint's EMA generator as safetensors (no pickle) plus its config.

    python export.py ckpt_path=logs/train/runs/RUN/checkpoints/last.ckpt out=exports/shapes_gan
    python generate.py ckpt_path=exports/shapes_gan prompts='["a red circle"]'
"""

import sys

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    from lightning_modules.export import ExportError, export

    try:
        out = export(cfg.ckpt_path, cfg.out)
    except ExportError as err:
        print(f"gan-ga: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"exported the EMA generator of {cfg.ckpt_path} to {out}")


if __name__ == "__main__":
    main()
