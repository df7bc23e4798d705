"""What every entry point (train.py, generate.py, evaluate.py, export.py) does with errors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig

from gan_ga_utils.errors import UserError


def run_or_exit(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run ``task(cfg)``. An expected failure (:class:`~gan_ga_utils.errors.UserError`: config,
    data, checkpoints, prompts, encoder files; a diverged training) is printed as one ``gan-ga: ...``
    line naming the key or path, with its exit status (2; 3 for a diverged training). Anything else
    is a bug and keeps its traceback."""
    try:
        return task(cfg)
    except UserError as err:
        print(f"gan-ga: {user_message(err)}", file=sys.stderr)
        sys.exit(err.exit_code)


def user_message(err: UserError) -> str:
    """The error's own message; for one re-raised from a DataLoader worker (whose text is
    "Caught DataError in DataLoader worker process 0. Original Traceback ..."), the original message
    without the worker's traceback."""
    text = str(err)
    if "Original Traceback" not in text:
        return text
    marker = f"{type(err).__name__}: "
    at = text.rfind("\n", 0, text.rfind(marker)) + 1  # the line "package.module.DataError: message"
    return text[at:].split(marker, 1)[1].strip() if marker in text[at:] else text


def check_choices(conf_dir: str | Path, argv: list[str] | None = None) -> None:
    """Stop with one ``gan-ga:`` line (exit 2) when the command line picks a config that does not
    exist (``encoder=nonexistent``): ``group=option``, ``+group=option`` and sweeps
    ``group=a,b`` are looked up in ``conf_dir`` before Hydra composes, naming what is available.
    Keys with a dot, ``hydra`` settings, and sweep functions (``choice(...)``) are left to Hydra."""
    conf = Path(conf_dir)
    for arg in sys.argv[1:] if argv is None else argv:
        key, eq, value = arg.partition("=")
        key = key.lstrip("+~")
        if not eq or arg.startswith("-") or "." in key or key.startswith("hydra") or "(" in value:
            continue
        group = conf / key
        if not group.is_dir():
            continue
        for option in filter(None, (v.strip() for v in value.split(","))):
            if option != "null" and not (group / f"{option}.yaml").is_file():
                available = sorted(p.stem for p in group.glob("*.yaml"))
                print(f"gan-ga: {key}={option}: there is no conf/{key}/{option}.yaml; available: "
                      f"{', '.join(available)}", file=sys.stderr)
                sys.exit(2)
