"""Every expected failure of gan-ga: one :class:`UserError` base, caught by the entry points.

A ``UserError`` is the user's to fix (a config key, a data file, a checkpoint, a prompt): its
message names the key or path and the fix; ``train.py``, ``generate.py``, ``evaluate.py`` and
``export.py`` print it as one ``gan-ga: ...`` line and exit with :attr:`UserError.exit_code` (2; a
diverged training, 3). Anything else is a bug and keeps its traceback.

Each subclass also derives from the built-in exception it replaces, so ``except ValueError`` around
a constructor keeps working. This module imports nothing from gan-ga: any module may raise these.
"""

from __future__ import annotations

EXIT_BAD_INPUT, EXIT_DIVERGED = 2, 3


class UserError(Exception):
    """Bad input: the message says what and how to fix it. Exit status 2."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(UserError, ValueError):
    """A configuration value that cannot work; the message names every such key."""


class DataError(UserError, RuntimeError):
    """A data set cannot be read: a required path is missing or nothing usable remains."""


class TextCacheError(UserError, RuntimeError):
    """The text-feature cache could not be built or read."""


class EncoderLoadError(UserError, RuntimeError):
    """A text encoder's weights or tokenizer could not be found."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


class MetricsError(UserError, ValueError):
    """A metric cannot run as configured; the message names the key and the fix."""


class GenerationError(UserError, ValueError):
    """Bad generate.py input, or a checkpoint / export folder that cannot be loaded."""


class ExportError(UserError, ValueError):
    """Bad export.py input or an incomplete export folder; the message names the path."""


class DistributedError(UserError, RuntimeError):
    """A step that process 0 runs first (building a cache, training the shapes oracle) failed there;
    every other process stops with this error, which names the step and process 0's message."""


class DivergenceError(UserError, RuntimeError):
    """Training stopped after too many non-finite updates in a row; the message names the last good
    checkpoint and the likely causes. Exit status 3."""

    exit_code = EXIT_DIVERGED
