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
``random``  a random caption of another group.
``hard``    the caption of another group most similar to the true one (cosine of the pooled
            sentence vectors): the hardest negative in the batch, e.g. the same shape and colour
            at another position.

A data set can also bring its own negatives: a ``negative_caption`` per sample (shapes with
``data.negatives=true``: the scene with one attribute of one object changed). Then each image's
mismatched caption is its own negative, whatever ``mismatch`` says, and the negatives join the
contrastive terms as extra captions to tell apart.
"""

from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F

MISMATCH_MODES = ("roll", "random", "hard")


def caption_groups(batch: dict, n: int, device: torch.device | str = "cpu", negatives: bool = False) -> torch.Tensor:
    """[n] long (``negatives``: [2n], the batch's captions then its ``negative_caption``s): equal ids
    for captions that are equivalent."""
    if "attributes" in batch:  # shapes: the scene itself, whatever the wording
        rows = batch["attributes"].reshape(n, -1)
        if negatives:
            rows = torch.cat([rows, batch["negative_attributes"].reshape(n, -1)])
        return torch.unique(rows, dim=0, return_inverse=True)[1].to(device)
    captions = batch.get("caption")
    if captions is None:
        return torch.arange(2 * n if negatives else n, device=device)
    if negatives:
        captions = [*captions, *batch["negative_caption"]]
    ids = [zlib.crc32(" ".join(str(c).lower().split()).encode()) for c in captions]
    return torch.unique(torch.tensor(ids, dtype=torch.long), return_inverse=True)[1].to(device)


def mismatch_indices(mode: str, groups: torch.Tensor, pooled: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """For each sample ``i`` the index of the caption it is mismatched with ([B] long). A sample
    whose group fills the whole batch (no other group exists) falls back to its neighbour."""
    n = groups.shape[0]
    device = groups.device
    roll = torch.arange(n, device=device).roll(1)  # image i gets caption i - 1, as DF-GAN
    if mode == "roll":
        return roll
    if mode not in MISMATCH_MODES:
        raise ValueError(f"model.mismatch={mode!r} is not one of {MISMATCH_MODES}")
    other = groups[:, None] != groups[None, :]
    if mode == "hard":
        p = F.normalize(pooled.detach().float(), dim=-1)
        score = p @ p.T
    else:
        score = torch.rand(n, n, generator=generator).to(device)
    score = score.masked_fill(~other, float("-inf"))
    pick = score.argmax(1)
    return torch.where(other.any(1), pick, roll)
