"""Which caption each real image is shown as a *mismatched* pair, and which captions are equivalent.

Matching-aware discriminators (GAN-INT-CLS, DF-GAN) learn that an image must fit its caption from
(real image, wrong caption) pairs. A wrong caption must really be wrong: ``roll(1)`` can pair an
image with an identical or equivalent caption (on shapes, a paraphrase of the same scene), which
teaches D to reject a correct pair. And it should be close to right: a caption that differs in one
word is what teaches D to read that word.

``caption_groups`` gives every sample of a batch the id of its equivalence class: samples of one
group describe the same thing. Shapes batches carry their exact scene attributes; other data sets
group identical caption strings.

Modes of :func:`mismatch_indices`:

``roll``    the neighbour's caption (DF-GAN), equivalent or not.
``random``  a random caption that is not true of the image.
``hard``    the caption, not true of the image, most similar to the true one (cosine of the pooled
            sentence vectors): the hardest negative in the batch, e.g. the same shape and colour
            at another position.

A data set can also bring its own negatives: a ``negative_caption`` per sample (shapes with
``data.negatives=true``: the scene with one attribute of one object changed). Then each image's
mismatched caption is its own negative, whatever ``mismatch`` says, and the negatives join the
contrastive terms as extra captions to tell apart.
"""

from __future__ import annotations

import zlib
from typing import NamedTuple

import torch
import torch.nn.functional as F

MISMATCH_MODES = ("roll", "random", "hard")


class Matches(NamedTuple):
    """Which captions of a batch may be counted as wrong, [n, T] bool each (T = n captions, or 2n
    with the negatives after them; the diagonal is True):

    ``of_images[i, t]``: caption ``t`` is true of real image ``i`` (D's real pairs);
    ``of_captions[i, t]``: caption ``t`` may be true of an image made for caption ``i`` (G's fakes):
    the two agree on every attribute both name. A fake of "a large star" may be red, so "a red
    star" is no negative of it, although it is one of the real image of that caption if it is blue.
    """

    of_images: torch.Tensor
    of_captions: torch.Tensor

    @staticmethod
    def identity(n: int, t: int, device: torch.device | str = "cpu") -> "Matches":
        eye = torch.eye(n, t, dtype=torch.bool, device=device)
        return Matches(eye, eye)


def caption_matches(batch: dict, n: int, device: torch.device | str = "cpu", negatives: bool = False) -> Matches:
    """:class:`Matches` of a batch. Shapes batches carry what each image shows (``attributes``) and
    what its caption names (``named``): caption ``t`` is true of image ``i`` when every attribute it
    names is image ``i``'s, whatever the wording; an open attribute never makes a caption false.
    Other data sets: captions equal after lower-casing and joining blanks (both matrices alike)."""
    if "attributes" in batch:
        truth = batch["attributes"].reshape(n, -1)
        named = batch["named"].reshape(n, -1) if "named" in batch else torch.ones_like(truth, dtype=torch.bool)
        said = torch.cat([truth, batch["negative_attributes"].reshape(n, -1)]) if negatives else truth
        said_named = torch.cat([named, named]) if negatives else named
        same = said[None] == truth[:, None]
        of_images = (same | ~said_named[None]).all(-1)
        of_captions = (same | ~said_named[None] | ~named[:, None]).all(-1)
        return Matches(of_images.to(device), of_captions.to(device))
    captions = batch.get("caption")
    if captions is None:
        return Matches.identity(n, 2 * n if negatives else n, device)
    if negatives:
        captions = [*captions, *batch["negative_caption"]]
    ids = torch.tensor([zlib.crc32(" ".join(str(c).lower().split()).encode()) for c in captions], dtype=torch.long)
    same = (ids[:n, None] == ids[None, :]).to(device)
    return Matches(same, same)


def mismatch_indices(mode: str, matches: torch.Tensor, pooled: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """For each sample ``i`` the index of the caption it is mismatched with ([B] long): one that is
    not true of image ``i`` (``matches`` [B, B], :func:`caption_matches`). A sample of whom every
    caption of the batch is true falls back to its neighbour."""
    n = matches.shape[0]
    device = matches.device
    roll = torch.arange(n, device=device).roll(1)  # image i gets caption i - 1, as DF-GAN
    if mode == "roll":
        return roll
    if mode not in MISMATCH_MODES:
        raise ValueError(f"model.mismatch={mode!r} is not one of {MISMATCH_MODES}")
    other = ~matches[:, :n]
    if mode == "hard":
        p = F.normalize(pooled.detach().float(), dim=-1)
        score = p @ p.T
    else:
        score = torch.rand(n, n, generator=generator).to(device)
    score = score.masked_fill(~other, float("-inf"))
    pick = score.argmax(1)
    return torch.where(other.any(1), pick, roll)
