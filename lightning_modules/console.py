"""The ``gan-ga`` command of an installed copy: the scripts' work, with the configs shipped in the
package (``gan_ga_conf``, the repository's ``conf/``) and the same Hydra overrides.

    gan-ga train model=gan_ga data=coco trainer=ddp trainer.devices=4
    gan-ga generate ckpt_path=hf://user/repo prompts='["a red circle"]'
    gan-ga evaluate ckpt_path=RUN/checkpoints/last.ckpt split=test
    gan-ga export ckpt_path=RUN/checkpoints/last.ckpt out=DIR push_to_hub=user/repo
    gan-ga demo ckpt_path=DIR
    gan-ga make-shards data=coco data.root=... out=DIR

Exit status as the scripts': 0 done, 2 bad input, 3 diverged.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path
from typing import Any, Callable

CONFIG_PACKAGE = "gan_ga_conf"


def _train(cfg) -> Any:
    from lightning_modules.training import optimized_value, run_training

    metrics = run_training(cfg)
    return optimized_value(cfg, metrics)


def _generate(cfg) -> Any:
    from lightning_modules.generation import generate

    return generate(cfg)


def _evaluate(cfg) -> Any:
    from lightning_modules.evaluation import evaluate

    return evaluate(cfg)


def _export(cfg) -> Any:
    from lightning_modules.export import export_task

    return export_task(cfg)


def _demo(cfg) -> Any:
    from lightning_modules.demo import serve

    return serve(cfg)


def _make_shards(cfg) -> Any:
    from datamodules.make_shards import make_shards

    return make_shards(cfg)


# command -> (config name, task)
COMMANDS: dict[str, tuple[str, Callable]] = {
    "train": ("train", _train), "generate": ("generate", _generate), "evaluate": ("evaluate", _evaluate),
    "export": ("export", _export), "demo": ("demo", _demo), "make-shards": ("make_shards", _make_shards),
}


def conf_dir() -> Path:
    """The installed configs' folder."""
    return Path(str(resources.files(CONFIG_PACKAGE)))


def main(argv: list[str] | None = None) -> Any:
    import hydra

    from gan_ga_utils.cli import check_choices, run_or_exit

    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        sys.exit(0 if args else 2)
    command, overrides = args[0], args[1:]
    if command not in COMMANDS:
        print(f"gan-ga: no command {command!r}; commands: {', '.join(COMMANDS)} (gan-ga --help)", file=sys.stderr)
        sys.exit(2)
    config_name, task = COMMANDS[command]
    check_choices(conf_dir(), overrides)
    sys.argv = [f"gan-ga-{command}", *overrides]  # Hydra reads its overrides (and --multirun, --cfg ...) here

    @hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_PACKAGE}", config_name=config_name)
    def run(cfg) -> Any:
        return run_or_exit(task, cfg)

    return run()
