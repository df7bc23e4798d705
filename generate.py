"""Turn prompts into images with a trained generator (its EMA weights).

    python generate.py ckpt_path=RUN/checkpoints/last.ckpt prompts='["a red circle", "a small blue square on the left"]'
    python generate.py ckpt_path=... prompts_file=prompts.txt num_per_prompt=8 seed=1 truncation=1.0

Writes one PNG per prompt (its samples side by side), grid.png (all prompts, labelled) and
prompts.json (which file holds which prompt) to out_dir.
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    from gan_ga_utils.cli import run_or_exit
    from lightning_modules.generation import generate

    run_or_exit(generate, cfg)


if __name__ == "__main__":
    from gan_ga_utils.cli import check_choices

    check_choices(Path(__file__).parent / "conf")
    main()
