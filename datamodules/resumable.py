"""Training samplers whose order is a function of how many batches the run has trained.

Lightning rebuilds a plain DataLoader from the start of an epoch on resume, and a checkpoint
written at the end of a run counts its epoch as finished. gan-ga's training samplers ignore both:
each *data* epoch's order comes from ``(seed, data epoch)``, and every pass starts at the batch the
data module's ``batches_trained`` points to:

    data epoch, batch in it = divmod(batches_trained, batches per data epoch)

so a resumed run reads exactly the samples the uninterrupted run would have read next, whatever
Lightning's epoch counter says. The data module counts the training batches it hands to the model
(:class:`ResumableDataModule`) and keeps the count in its ``state_dict``, which Lightning saves in
every checkpoint and restores on resume: the position is the data's own, read from nothing else.
Under DDP every rank counts the same batches and reads its own share. Without a position
(validation, test) the sampler is a plain ``DistributedSampler`` over ``set_epoch``'s epoch.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import lightning as L
import torch.distributed as dist
from torch.utils.data import DistributedSampler


def world() -> tuple[int, int]:
    """(world size, rank) of the running process group, (1, 0) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class ResumableSampler(DistributedSampler):
    """A ``DistributedSampler`` (Lightning keeps it) that, given ``position`` (batches trained so far)
    and ``batch_size``, starts each pass where training stands. Subclasses override :meth:`indices`."""

    def __init__(self, dataset, *, shuffle: bool, seed: int = 0, drop_last: bool = False,
                 num_replicas: int | None = None, rank: int | None = None,
                 position: Callable[[], int] | None = None, batch_size: int = 1):
        n_world, this_rank = world()
        super().__init__(dataset, num_replicas=n_world if num_replicas is None else num_replicas,
                         rank=this_rank if rank is None else rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.position, self.batch_size = position, batch_size

    def indices(self) -> list[int]:
        """This rank's samples of data epoch ``self.epoch``, in order."""
        return list(super().__iter__())

    def batches_per_epoch(self) -> int:
        return len(self) // self.batch_size

    def __iter__(self) -> Iterator[int]:
        if self.position is None or self.batches_per_epoch() == 0:
            return iter(self.indices())
        self.epoch, skip = divmod(int(self.position()), self.batches_per_epoch())
        return iter(self.indices()[skip * self.batch_size :])


class ResumableDataModule(L.LightningDataModule):
    """A data module that counts the training batches it hands to the model (``batches_trained``),
    saved and restored with every checkpoint through ``state_dict`` / ``load_state_dict``; its
    training sampler starts where that count points (``position=self.training_position``)."""

    batches_trained: int = 0

    def training_position(self) -> int:
        return int(self.batches_trained)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Lightning calls this once per batch, as the batch reaches the model (not when a loader
        worker or the prefetcher reads it): a training batch counts here."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.training:
            self.batches_trained = int(self.batches_trained) + 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"batches_trained": int(self.batches_trained)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.batches_trained = int(state_dict.get("batches_trained", 0))
