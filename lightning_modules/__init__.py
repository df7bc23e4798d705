"""gan-ga's LightningModule and what it is built from."""

from omegaconf import OmegaConf

# `${not:${.offline}}` in conf/logger/wandb.yaml: checkpoints are uploaded exactly when W&B is online.
if not OmegaConf.has_resolver("not"):
    OmegaConf.register_new_resolver("not", lambda value: not value)

__all__ = ["load", "TextToImage"]


def __getattr__(name: str):
    """``lightning_modules.load`` and ``lightning_modules.TextToImage``, the Python API (``api.py``),
    imported on first use so that importing one submodule does not import them all."""
    if name in __all__:
        from lightning_modules import api

        return getattr(api, name)
    raise AttributeError(f"module 'lightning_modules' has no attribute {name!r}")
