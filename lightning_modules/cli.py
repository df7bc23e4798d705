"""What every entry point (train.py, generate.py, evaluate.py, export.py) does with errors."""

from __future__ import annotations

import sys
from typing import Any, Callable

from omegaconf import DictConfig

from lightning_modules.errors import UserError


def run_or_exit(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run ``task(cfg)``. An expected failure (:class:`~lightning_modules.errors.UserError`: config,
    data, checkpoints, prompts, encoder files; a diverged training) is printed as one ``gan-ga: ...``
    line naming the key or path, with its exit status (2; 3 for a diverged training). Anything else
    is a bug and keeps its traceback."""
    try:
        return task(cfg)
    except UserError as err:
        print(f"gan-ga: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
