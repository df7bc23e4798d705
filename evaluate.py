"""Metrics of a trained checkpoint (its EMA generator), written to metrics.json with their protocol.

    python evaluate.py ckpt_path=RUN/checkpoints/last.ckpt num_samples=2048   # the run's defaults (metrics=auto):
        # shapes: caption accuracy; real data with data.label_columns: reference FD, precision/recall,
        # label accuracy beside the real ceiling, memorisation
    python evaluate.py ckpt_path=... metrics=[fid,kid,is] inception_weights=/models/pt_inception.pth
    python evaluate.py folders=[REAL_DIR,GENERATED_DIR] metrics=[fid,kid] inception_weights=/models/pt_inception.pth
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from gan_ga_utils.cli import run_or_exit
    from lightning_modules.evaluation import evaluate

    run_or_exit(evaluate, cfg)


if __name__ == "__main__":
    from gan_ga_utils.cli import check_choices

    check_choices(Path(__file__).parent / "conf")
    main()
