"""Real process groups for tests of what the ranks of a DDP run must agree on.

:func:`run_on_processes` starts ``world`` spawned processes, each a Lightning ``Fabric`` (DDP on the
CPU, gloo) in one group, and runs ``target(fabric, *args)`` in each. Every process reports its own
outcome and stays alive until every process has reported (a process that fails does not end the
group for the others, as in a run whose failed process is still tearing down); the parent waits at
most ``timeout`` seconds, so a process stuck at a barrier or a collective shows up as a missing
outcome, never as a hung test.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import socket
import time
from types import SimpleNamespace


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, target, args: tuple, results, done, timeout: float) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank), NODE_RANK="0")
    try:
        from lightning.fabric import Fabric

        fabric = Fabric(accelerator="cpu", devices=world, strategy="ddp")
        fabric.launch()
        results.put((rank, "ok", target(fabric, *args)))
    except BaseException as err:  # noqa: BLE001 - reported to the parent
        results.put((rank, "error", outcome_of(err)))
    done.wait(timeout)


def outcome_of(err: BaseException) -> dict:
    return {"type": type(err).__name__, "bases": [c.__name__ for c in type(err).__mro__], "message": str(err)}


def run_on_processes(target, *args, world: int = 2, timeout: float = 120.0) -> dict[int, tuple[str, object]]:
    """``{rank: ("ok", target's return value) | ("error", outcome_of(error))}`` of the ranks that
    finished within ``timeout`` seconds."""
    context = mp.get_context("spawn")
    results, done = context.Queue(), context.Event()
    port = _free_port()
    processes = [context.Process(target=_entry, args=(rank, world, port, target, args, results, done, timeout),
                                 daemon=True) for rank in range(world)]
    for process in processes:
        process.start()
    outcomes: dict[int, tuple[str, object]] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(outcomes) < world and (left := deadline - time.monotonic()) > 0:
            try:
                rank, status, value = results.get(timeout=left)
            except queue.Empty:
                break
            outcomes[rank] = (status, value)
    finally:
        done.set()
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
    return outcomes


# -- targets (module level, so that spawned processes can import them)

def best_checkpoint_decisions(fabric, values: list[float], best: float, mode: str) -> dict:
    """``SampleMetrics.on_validation_epoch_end`` on this rank, whose metric value is ``values[rank]``:
    which values it saved ``best.ckpt`` for, and its best value afterwards."""
    from lightning_modules.callbacks import SampleMetrics

    callback = SampleMetrics(metrics=["fid"], dirpath="checkpoints", save_best=True)
    callback.metrics, callback.primary, callback.mode, callback.best = ["fid"], "metrics/fid", mode, best
    callback.compute = lambda module: {"metrics/fid": values[fabric.global_rank]}
    saved: list[float] = []
    callback._save_best = lambda trainer, module, value: saved.append(value)
    trainer = SimpleNamespace(sanity_checking=False, fast_dev_run=False, strategy=fabric)
    callback.on_validation_epoch_end(trainer, SimpleNamespace(log_dict=lambda *args, **kwargs: None))
    return {"saved": saved, "best": callback.best}


def rank_zero_first_outcomes(fabric, folder: str) -> dict:
    """``rank_zero_first`` when process 0's build fails, and when it succeeds (writing a file the
    other processes then read): each case's outcome on this rank."""
    from pathlib import Path

    from gan_ga_utils.distributed import rank_zero_first

    def failing():
        if fabric.global_rank == 0:
            raise OSError("No space left on device: data/cache/text_features")
        return "built"

    def writing():
        path = Path(folder) / "built.txt"
        if fabric.global_rank == 0:
            time.sleep(0.5)  # the others would read too early if they did not wait
            path.write_text("from process 0")
        return path.read_text()

    out = {}
    for name, build in (("failing", failing), ("writing", writing)):
        try:
            out[name] = ("ok", rank_zero_first(fabric, build, "building the text cache"))
        except Exception as err:  # noqa: BLE001 - the outcome is the result
            out[name] = ("error", outcome_of(err))
    return out


def oracle_setup_outcome(fabric, folder: str) -> str:
    """``SampleMetrics.setup`` (caption accuracy on shapes) when training the shapes oracle fails on
    process 0: this rank's outcome (the error propagates)."""
    from datamodules.shapes import ShapesDataModule
    from lightning_modules.callbacks import SampleMetrics
    from lightning_modules.metrics import shapes_oracle

    def train_oracle(**kwargs):
        if fabric.global_rank == 0:
            raise OSError("No space left on device: data/cache/shapes_oracle")
        return shapes_oracle.ShapesOracle().eval()

    shapes_oracle.train_oracle = train_oracle
    data = ShapesDataModule(batch_size=4, num_workers=0, val_size=8, test_size=8, train_size=8)
    callback = SampleMetrics(metrics=["caption_accuracy"], num_samples=8, cache_dir=folder, save_best=False)
    trainer = SimpleNamespace(datamodule=data, strategy=fabric, local_rank=fabric.local_rank,
                              global_rank=fabric.global_rank, is_global_zero=fabric.global_rank == 0)
    callback.setup(trainer, SimpleNamespace(device="cpu"), "fit")
    return "set up"


def review_scenarios(fabric, folder: str) -> dict:
    """Bugs a and i in one process group (starting one costs seconds): each scenario's outcome."""
    import numpy as np

    scenarios = {"a": lambda: best_checkpoint_decisions(fabric, [float(np.nextafter(0.25, 0.0)), 0.25], 0.25, "min"),
                 "i": lambda: rank_zero_first_outcomes(fabric, folder),
                 "i_oracle": lambda: oracle_setup_outcome(fabric, folder)}  # last: the old code hung here
    out = {}
    for name, scenario in scenarios.items():
        try:
            out[name] = ("ok", scenario())
        except Exception as err:  # noqa: BLE001 - the outcome is the result
            out[name] = ("error", outcome_of(err))
    return out
