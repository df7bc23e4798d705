"""Export a checkpoint's EMA generator as safetensors (no pickle) plus its config.

    python export.py ckpt_path=logs/train/runs/RUN/checkpoints/last.ckpt out=exports/shapes_gan
    python generate.py ckpt_path=exports/shapes_gan prompts='["a red circle"]'
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    from gan_ga_utils.cli import run_or_exit
    from lightning_modules.export import export_task

    run_or_exit(export_task, cfg)


if __name__ == "__main__":
    from gan_ga_utils.cli import check_choices

    check_choices(Path(__file__).parent / "conf")
    main()
