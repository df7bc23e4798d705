"""The one batch structure: every key a gan-ga data module's loader may yield, and what it holds.

Every data module (shapes, the caption data sets, shards, tars, a user's own) yields dictionaries
of these keys, collated by PyTorch's default ``collate_fn`` (tensors stacked along a first batch
dimension ``B``, strings gathered into lists). The model (``lightning_modules``) reads nothing else:
``image`` and ``caption`` are required, every other key is optional and read only when present.
A user's data module needs only ``image`` and ``caption``.
"""

from __future__ import annotations

from typing import Mapping, TypedDict

from torch import Tensor

from gan_ga_utils.errors import DataError


class Batch(TypedDict, total=False):
    # --- every data set
    image: Tensor  # [B, 3, H, W] float in [-1, 1]
    caption: list[str]  # B captions, one per image
    # --- the caption data sets (datamodules/captions.py)
    caption_id: Tensor  # [B] long: the caption's row over all splits (the text cache's row)
    skipped: Tensor  # [B] long: unreadable records passed over to make the sample (summed by callbacks.RuntimeSkips)
    # --- the text cache (datamodules/text_cache.py): the frozen encoder's features; it does not run
    text_tokens: Tensor  # [B, L, D] token features (float16/bfloat16/float32: data.cache_dtype)
    text_mask: Tensor  # [B, L] 1 for a real token, 0 for padding
    text_pooled: Tensor  # [B, D] sentence vector
    # --- the shapes data (datamodules/shapes.py): what the caption says, for negatives and matching
    attributes: Tensor  # [B, O, 4] long: index of shape, colour, size, position per object; -1: no object
    named: Tensor  # [B, O, 4] bool: the caption names that attribute (an open one may be anything)
    negative_caption: list[str]  # B captions false of their image (data.negatives)
    negative_attributes: Tensor  # [B, O, 4] long: what each negative caption says
    redraws: Tensor  # [B, K, 3, H, W]: other renders of each caption (open attributes and poses drawn again)
    # --- relation scenes (datamodules/shapes_pairs.py): object 0 <relation> object 1; cells not named
    relation: Tensor  # [B] long: index into shapes_pairs.RELATIONS of what the caption says
    negative_relation: Tensor  # [B] long: the relation each negative caption says


KEYS = frozenset(Batch.__annotations__)
REQUIRED = ("image", "caption")


def check_batch(batch: Mapping, source: str) -> None:
    """Raise :class:`DataError` naming ``source`` (the data module) when a batch lacks a required
    key or carries a key this structure does not list."""
    missing = [k for k in REQUIRED if k not in batch]
    unknown = sorted(set(batch) - KEYS)
    if missing or unknown:
        raise DataError(f"{source}: a batch {'lacks ' + str(missing) if missing else ''}"
                        f"{' and ' if missing and unknown else ''}{'has unknown keys ' + str(unknown) if unknown else ''}; "
                        f"a batch holds {list(REQUIRED)} and optionally {sorted(KEYS - set(REQUIRED))} "
                        "(datamodules/batch.py)")
