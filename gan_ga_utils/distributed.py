"""Steps that process 0 runs first while the others wait, ending together when it fails.

``dist`` is anything with ``global_rank`` and ``broadcast(obj, src=0)``: a Lightning ``Strategy``
(``trainer.strategy``) or a Lightning ``Fabric``; with one process both are trivial. This module
imports nothing from gan-ga but its errors: any module may use it.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from gan_ga_utils.errors import DistributedError

T = TypeVar("T")


def rank_zero_first(dist, build: Callable[[], T], what: str) -> T:
    """Process 0 runs ``build()``; then every process learns whether it failed. On failure process 0
    raises its own error and every other process a :class:`DistributedError` naming ``what`` (no
    process is left waiting at a barrier). On success the other processes run ``build()`` themselves:
    it loads what process 0 wrote, or builds it where their file system does not see it."""
    failure, result = None, None
    if dist.global_rank == 0:
        try:
            result = build()
        except BaseException as err:  # noqa: BLE001 - told to the other processes, then raised
            failure = err
    message = dist.broadcast(None if failure is None else f"{type(failure).__name__}: {failure}", src=0)
    if dist.global_rank == 0:
        if failure is not None:
            raise failure
        return result
    if message is not None:
        raise DistributedError(f"{what} failed on process 0: {message}")
    return build()

