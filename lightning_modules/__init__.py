"""gan-ga's LightningModule and what it is built from."""

from omegaconf import OmegaConf

# `${not:${.offline}}` in conf/logger/wandb.yaml: checkpoints are uploaded exactly when W&B is online.
if not OmegaConf.has_resolver("not"):
    OmegaConf.register_new_resolver("not", lambda value: not value)
