"""What every gan-ga package may use: errors and exit codes, config checks, atomic files,
rank-zero-first steps, the entry points' error handling.

The layering (enforced by ``tests/test_structure.py``)::

    gan_ga_utils  <-  datamodules  <-  lightning_modules  <-  train.py, generate.py, ...

``gan_ga_utils`` imports nothing else from gan-ga; ``datamodules`` imports only ``gan_ga_utils``;
``lightning_modules`` may import both.
"""
