"""What every entry point (train.py, generate.py, evaluate.py, export.py) does with errors."""

from __future__ import annotations

import sys
from typing import Any, Callable

from omegaconf import DictConfig

EXIT_BAD_INPUT, EXIT_DIVERGED = 2, 3


def run_or_exit(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run ``task(cfg)``. Bad input (config, data, checkpoints, prompts, encoder files) is printed as
    one ``gan-ga: ...`` line naming the key or path, exit status 2; a diverged training, status 3.
    Anything else is a bug and keeps its traceback."""
    from lightning_modules.export import ExportError
    from lightning_modules.generation import GenerationError
    from lightning_modules.text_to_image_gan import DivergenceError
    from lightning_modules.training import USER_ERRORS

    try:
        return task(cfg)
    except (*USER_ERRORS, GenerationError, ExportError) as err:
        print(f"gan-ga: {err}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except DivergenceError as err:
        print(f"gan-ga: {err}", file=sys.stderr)
        sys.exit(EXIT_DIVERGED)
