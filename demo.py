"""A local web page and HTTP API for a trained model: `python demo.py ckpt_path=RUN/checkpoints/last.ckpt`.

Opens http://127.0.0.1:7860 (host=..., port=...): a prompt box, number of images, seed and
truncation, a grid of results and an interpolation strip between two prompts. Without ckpt_path the
newest logs/train/runs/*/checkpoints/last.ckpt is served. API: GET /api/generate?prompt=...&n=4&seed=0,
GET /api/interpolate?a=...&b=...&steps=6, GET /healthz. At most max_queue=8 generation requests wait or
run at once; more are answered 503 with Retry-After. A host that is not a loopback address is warned
about: the demo has no authentication.
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="demo")
def main(cfg: DictConfig) -> None:
    from gan_ga_utils.cli import run_or_exit
    from lightning_modules.demo import serve

    run_or_exit(serve, cfg)


if __name__ == "__main__":
    from gan_ga_utils.cli import check_choices

    check_choices(Path(__file__).parent / "conf")
    main()
