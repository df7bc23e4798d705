"""Metrics of a trained checkpoint (its EMA generator), written to metrics.json with their protocol.

    python evaluate.py ckpt_path=RUN/checkpoints/last.ckpt metrics=[caption_accuracy] num_samples=2048
    python evaluate.py ckpt_path=... metrics=[fid,kid,is] inception_weights=/models/pt_inception.pth
"""

import sys

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from lightning_modules.evaluation import evaluate
    from lightning_modules.training import USER_ERRORS

    try:
        evaluate(cfg)
    except USER_ERRORS as err:
        print(f"gan-ga: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
