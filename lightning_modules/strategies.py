"""DDP for a GAN's alternating updates, without ``find_unused_parameters``.

Lightning's ``ddp`` wraps the whole LightningModule in one ``DistributedDataParallel``; G and D
then take turns, so every backward leaves half the parameters unused, and plain ``ddp`` fails
("parameters that were not used in producing the loss") unless ``find_unused_parameters=True``
makes DDP walk the autograd graph after every forward. ``ddp_gan`` does what StyleGAN2-ADA's
training loop does instead: no wrapper; rank 0's weights are broadcast once at the start, and
before each optimizer step the module averages that optimizer's gradients over the ranks in one
flat all-reduce (``TextToImageGAN.on_before_optimizer_step``). The MA-GP's double backward needs
nothing special. Names: ``ddp_gan`` (processes started by Lightning) and ``ddp_gan_spawn`` (spawned
workers, for Hydra ``-m`` sweeps).
"""

from __future__ import annotations

from lightning.pytorch.overrides.distributed import _sync_module_states
from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry


class GANDDPStrategy(DDPStrategy):
    strategy_name = "ddp_gan"
    averages_gradients_in_module = True  # read by the LightningModule

    def configure_ddp(self) -> None:
        _sync_module_states(self.model)  # what DistributedDataParallel's constructor would broadcast

    @classmethod
    def register_strategies(cls, strategy_registry) -> None:
        strategy_registry.register("ddp_gan", cls, description="DDP without a wrapper: per-optimizer gradient "
                                   "all-reduce in the module", start_method="popen")
        strategy_registry.register("ddp_gan_spawn", cls, description="ddp_gan with spawned workers",
                                   start_method="spawn")


if "ddp_gan" not in StrategyRegistry:
    GANDDPStrategy.register_strategies(StrategyRegistry)


def average_gradients(params: list, world_size: int) -> None:
    """Replace each gradient by its mean over the ranks: one flat all-reduce (StyleGAN2-ADA)."""
    import torch

    grads = [p.grad for p in params if p.grad is not None]
    if not grads or world_size <= 1:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat.div_(world_size)
    for g, averaged in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(averaged.view_as(g))
