"""Train a text-to-image GAN: `python train.py [group=option ...] [key=value ...]`.

Examples:
    python train.py                                    # GAN-GA on shapes, offline MiniLM encoder
    python train.py model=dfgan encoder=bert_base      # DF-GAN with BERT
    python train.py model=gan_ga trainer.devices=4     # DDP on 4 GPUs
    python train.py -m fusion=concat,affine,cross_attention
    python train.py ckpt_path=logs/train/runs/RUN/checkpoints/last.ckpt   # resume from a file
    python train.py resume=auto hydra.run.dir=logs/train/runs/my_run      # (re)start a run in a fixed folder

Exit status: 0 done (or stopped by SIGTERM/SIGUSR1 with last.ckpt saved), 2 bad input, 3 diverged.
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from gan_ga_utils.cli import run_or_exit
    from lightning_modules.training import optimized_value, run_training

    metrics = run_or_exit(run_training, cfg)
    return run_or_exit(lambda c: optimized_value(c, metrics), cfg)  # what a sweeper optimises


if __name__ == "__main__":
    from gan_ga_utils.cli import check_choices

    check_choices(Path(__file__).parent / "conf")
    main()
