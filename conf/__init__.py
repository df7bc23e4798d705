"""gan-ga's Hydra configs, installed as the package ``gan_ga_conf`` (the ``gan-ga`` command reads them
from there: ``pkg://gan_ga_conf``); the scripts of a clone read this folder directly."""
