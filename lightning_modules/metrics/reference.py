"""The reference network of a real data set: a small CNN trained on the set's own **training**
images to classify its label columns (``data.label_columns``, e.g. emoji64's ``group`` and
``subgroup``), whose 256-d penultimate features stand in for Inception's where Inception's weights
cannot be had. It is a measuring instrument of this data set, not a general image model: its
numbers compare runs on the same data and split, not with published FIDs.

It reads generated images of the test captions and the real test images into:

* ``reference/fd``: Frechet distance of Gaussians fitted to the two sets of features (float64);
* ``reference/precision`` and ``reference/recall`` (Kynkaenniemi et al. 2019, k = 3): the fraction
  of generated images inside the real images' k-NN manifold, and of real images inside the
  generated images' manifold;
* ``labels/<column>``: accuracy of its classifier on the generated images, against the label of
  the image whose caption was used; ``labels/<column>_real`` the same on the real images (the
  ceiling); ``labels/<column>_ratio`` their quotient;
* ``memorisation/nn_distance``: median distance (features) of each generated image to its nearest
  training image; ``memorisation/nn_distance_real`` the same for the real test images, never trained
  on; ``memorisation/nn_ratio`` their quotient (well below 1: generated images sit closer to training
  images than new real drawings do, i.e. copies).

Trained once per training set and cached under ``cache_dir/reference_net/<digest>.safetensors``
with its label vocabulary and the training images' features: the digest covers the training
images (paths, sizes, labels), the image size, this architecture and its training recipe.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gan_ga_utils.errors import MetricsError
from gan_ga_utils.files import atomic_write
from lightning_modules.metrics.frechet import frechet_distance

INPUT_SIZE = 64
FEATURES = 256
NEAREST_K = 3  # precision / recall: the k-th nearest neighbour radius
VERSION = 1
TRAIN = {"epochs": 26, "batch_size": 96, "lr": 2e-3, "weight_decay": 5e-4, "seed": 0}  # emoji64: 1,510 steps
UNKNOWN = -1  # target of a label the training set never shows (counted as wrong)

PROTOCOL = {
    "reader": "reference network (lightning_modules/metrics/reference.py): a CNN trained on this data set's "
              f"training images to classify data.label_columns; {FEATURES}-d penultimate features; "
              f"{INPUT_SIZE}x{INPUT_SIZE} input (area resize)",
    "fd": "Frechet distance (float64) between the reference features of the generated and the real images",
    "precision_recall": f"Kynkaenniemi et al. 2019, k={NEAREST_K}, Euclidean distance of reference features: "
                        "precision = fraction of generated images within the k-NN radius of some real image; "
                        "recall = fraction of real images within the k-NN radius of some generated image",
}
LABELS_PROTOCOL = {
    "labels/<column>": "accuracy of the reference network's classifier on the generated images against the label "
                       "of the image whose caption each was generated for",
    "labels/<column>_real": "the same on those real images (the ceiling: unseen test images of the same labels)",
    "labels/<column>_ratio": "labels/<column> / labels/<column>_real",
    "unknown_labels": "a label the training set never shows counts as wrong",
}
MEMORISATION_PROTOCOL = {
    "nn_distance": "median over generated images of the Euclidean distance (reference features) to the nearest "
                   "training image",
    "nn_distance_real": "the same for the real images of the split (never trained on)",
    "nn_ratio": "nn_distance / nn_distance_real: near 1 or above, generated images are as far from the training "
                "set as new real images; well below 1, they copy training images",
}


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class ReferenceNet(nn.Module):
    """[B,3,H,W] in [-1,1] (any H=W, resized to 64) -> 256-d features and one logit vector per label
    column. ``classes`` holds each column's label names (the index order of its logits)."""

    def __init__(self, classes: dict[str, list[str]], width: int = 16):
        super().__init__()
        self.classes = {k: list(v) for k, v in classes.items()}
        w = width
        self.body = nn.Sequential(
            _block(3, w, 2), _block(w, 2 * w, 1), nn.MaxPool2d(2),  # 32 -> 16
            _block(2 * w, 4 * w, 1), nn.MaxPool2d(2),  # 16 -> 8
            _block(4 * w, 8 * w, 1), _block(8 * w, 8 * w, 1),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8 * w, FEATURES), nn.ReLU(inplace=True),
        )
        self.heads = nn.ModuleDict({k: nn.Linear(FEATURES, len(v)) for k, v in self.classes.items()})
        self.dropout = nn.Dropout(0.3)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != INPUT_SIZE:
            images = F.interpolate(images.float(), size=(INPUT_SIZE, INPUT_SIZE), mode="area")
        return self.body(images.float().clamp(-1, 1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        feat = self.features(images)
        return feat, {k: head(self.dropout(feat)) for k, head in self.heads.items()}

    def targets(self, labels: dict[str, Sequence[str]]) -> dict[str, torch.Tensor]:
        """Label names per column -> class indices (:data:`UNKNOWN` for names training never had)."""
        out = {}
        for column, names in labels.items():
            index = {name: i for i, name in enumerate(self.classes.get(column, []))}
            out[column] = torch.tensor([index.get(str(n), UNKNOWN) for n in names], dtype=torch.long)
        return out


def _augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """What a generated image gets wrong that a drawing does not, and what keeps the labels: a shift
    of up to 1/16 of the side (white fill), blur, brightness and pixel noise."""
    n, _, size, _ = images.shape
    pad = max(1, size // 16)
    padded = F.pad(images, (pad,) * 4, value=1.0)
    dx, dy = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=gen))
    images = padded[..., dy : dy + size, dx : dx + size]
    blur = torch.rand(n, 1, 1, 1, generator=gen) < 0.3
    images = torch.where(blur, F.avg_pool2d(images, 3, stride=1, padding=1, count_include_pad=False), images)
    scale = 1 + 0.1 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)
    noise = torch.randn(images.shape, generator=gen) * 0.1 * torch.rand(n, 1, 1, 1, generator=gen)
    return ((images + 1) * scale - 1 + noise).clamp(-1, 1)


def train_reference(images: torch.Tensor, labels: dict[str, torch.Tensor], classes: dict[str, list[str]], *,
                    epochs: int, batch_size: int, lr: float, weight_decay: float, seed: int,
                    log=print) -> ReferenceNet:
    """Train on ``images`` [N,3,S,S] in [-1,1] and their class indices per column, with augmentation,
    for ``epochs`` passes over the images (at least one step)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ReferenceNet(classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    n = images.shape[0]
    steps = max(1, -(-epochs * n // batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    order, at = torch.randperm(n, generator=gen), 0
    for step in range(steps):
        if at + batch_size > n:
            order, at = torch.randperm(n, generator=gen), 0
        idx = order[at : at + min(batch_size, n)]
        at += batch_size
        _, logits = model(_augment(images[idx], gen))
        loss = sum(F.cross_entropy(logits[k], labels[k][idx]) for k in classes)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if (step + 1) % max(1, steps // 5) == 0:
            log(f"reference network: step {step + 1}/{steps} loss {loss.item():.3f}")
    return model.eval().requires_grad_(False)


def plain_view(dataset):
    """The split's dataset without training-time randomness (no random crop or flip)."""
    view = copy.copy(dataset)
    view.train = False
    return view


def training_set(datamodule, columns: Sequence[str]) -> tuple[list, dict[str, list[str]]]:
    """The training split's records and, per column, the sorted label names they use."""
    datamodule.setup("fit")
    records = datamodule.datasets["train"].records
    classes = {}
    for column in columns:
        missing = [r.path.name for r in records if column not in (r.labels or {})]
        if missing:
            raise MetricsError(f"data.label_columns names {column!r}, but {len(missing)} training images have no "
                               f"value for it (e.g. {missing[0]}): name manifest columns every row has")
        classes[column] = sorted({r.labels[column] for r in records})
    return records, classes


def digest(datamodule, columns: Sequence[str], recipe: dict | None = None) -> str:
    """Changes whenever the training images (path, size, labels), the image size, the architecture
    or the training recipe change."""
    return _digest(training_set(datamodule, columns)[0], columns, recipe or TRAIN, datamodule.image_size)


def _digest(records: Sequence, columns: Sequence[str], recipe: dict, image_size: int) -> str:
    h = hashlib.sha256()
    for part in (inspect.getsource(ReferenceNet), inspect.getsource(_augment), inspect.getsource(train_reference),
                 repr((sorted(columns), recipe, INPUT_SIZE, FEATURES, VERSION, image_size))):
        h.update(part.encode())
    for record in records:
        stat = record.path.stat() if record.path.exists() else None
        h.update(repr((str(record.path), stat.st_size if stat else None,
                       sorted((record.labels or {}).items()))).encode())
    return h.hexdigest()[:20]


@torch.no_grad()
def read(net: ReferenceNet, images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """``ref_feat`` (float [N, 256]) and ``ref_pred`` (long [N, columns]: the argmax class of each
    label column, in the order of ``net.classes``), on the CPU."""
    feats, preds = [], []
    for start in range(0, images.shape[0], batch_size):
        feat, logits = net(images[start : start + batch_size])
        feats.append(feat.float().cpu())
        preds.append(torch.stack([v.argmax(-1).cpu() for v in logits.values()], dim=1))
    return {"ref_feat": torch.cat(feats), "ref_pred": torch.cat(preds)}


def _load_images(dataset, indices: Sequence[int]) -> torch.Tensor:
    view = plain_view(dataset)
    return torch.stack([view.load_image(int(i)) for i in indices])


def load_or_train(datamodule, columns: Sequence[str], cache_dir: str | Path, log=print,
                  recipe: dict | None = None) -> ReferenceNet:
    """The cached reference network of this training set, trained (and cached atomically) when absent;
    ``net.train_features`` holds the training images' features (the memorisation check). ``recipe``
    replaces entries of :data:`TRAIN` (a quicker network for tests; part of the cache key)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    columns = list(columns or [])
    if not columns:
        raise MetricsError("the reference network (metrics reference, labels, memorisation) classifies labelled real "
                           "data, and data.label_columns is not set: name the manifest columns that label each image, "
                           "e.g. data.label_columns=[group,subgroup] (data=folder with a manifest, as experiment=emoji64)")
    records, classes = training_set(datamodule, columns)
    recipe = {**TRAIN, **(recipe or {})}
    key = _digest(records, columns, recipe, datamodule.image_size)
    path = Path(cache_dir) / "reference_net" / f"{key}.safetensors"
    if path.is_file():
        try:
            with safe_open(str(path), framework="pt") as f:
                saved_classes = json.loads(f.metadata()["classes"])
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            net = ReferenceNet(saved_classes)
            train_features = tensors.pop("train_features")
            net.load_state_dict(tensors)
            net.train_features, net.digest = train_features, key
            return net.eval().requires_grad_(False)
        except Exception as err:  # noqa: BLE001 - a damaged cache file: train again
            log(f"reference network: {path} unreadable ({err}); retraining")
    log(f"reference network: training on {len(records)} training images ({', '.join(columns)}) -> {path}")
    dataset = datamodule.datasets["train"]
    images = _load_images(dataset, range(len(records)))
    labels = {k: torch.tensor([classes[k].index(r.labels[k]) for r in records]) for k in columns}
    net = train_reference(images, labels, classes, log=log, **recipe)
    net.train_features, net.digest = read(net, images)["ref_feat"], key
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    with atomic_write(path) as tmp:
        save_file({**state, "train_features": net.train_features.contiguous()}, str(tmp),
                  metadata={"classes": json.dumps(classes), "train": json.dumps(recipe)})
    return net


# ------------------------------------------------------------------------------------------- numbers
def _kth_radius(features: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each point to its k-th nearest other point of the same set."""
    d = torch.cdist(features.double(), features.double())
    k = min(k, features.shape[0] - 1)
    return d.kthvalue(k + 1, dim=1).values  # +1: the point itself at distance 0


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = NEAREST_K) -> tuple[float, float]:
    """Improved precision and recall (Kynkaenniemi et al. 2019) of feature sets ``[N, D]``."""
    if min(real.shape[0], fake.shape[0]) < 2:
        raise MetricsError("precision/recall need at least 2 real and 2 generated images")
    cross = torch.cdist(fake.double(), real.double())  # [fake, real]
    precision = (cross <= _kth_radius(real, k)[None, :]).any(dim=1).double().mean()
    recall = (cross.T <= _kth_radius(fake, k)[None, :]).any(dim=1).double().mean()
    return float(precision), float(recall)


def nearest_distance(queries: torch.Tensor, pool: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Distance of each query to its nearest point of ``pool``."""
    return torch.cat([torch.cdist(queries[i : i + chunk].double(), pool.double()).min(dim=1).values
                      for i in range(0, queries.shape[0], chunk)])


def reference_scores(fake: dict, real: dict) -> dict[str, float]:
    precision, recall = precision_recall(real["ref_feat"], fake["ref_feat"])
    return {"reference/fd": frechet_distance(real["ref_feat"], fake["ref_feat"]),
            "reference/precision": precision, "reference/recall": recall}


def label_scores(fake: dict, real: dict, targets: dict[str, torch.Tensor]) -> dict[str, float]:
    """``targets``: class indices per label column, in the order of the reference network's columns."""
    out = {}
    for i, (column, target) in enumerate(targets.items()):
        generated = float((fake["ref_pred"][:, i] == target).double().mean())
        ceiling = float((real["ref_pred"][:, i] == target).double().mean())
        out.update({f"labels/{column}": generated, f"labels/{column}_real": ceiling,
                    f"labels/{column}_ratio": generated / ceiling if ceiling > 0 else float("nan")})
    return out


def memorisation_scores(fake: dict, real: dict, train_features: torch.Tensor) -> dict[str, float]:
    generated = float(nearest_distance(fake["ref_feat"], train_features).median())
    new_real = float(nearest_distance(real["ref_feat"], train_features).median())
    return {"memorisation/nn_distance": generated, "memorisation/nn_distance_real": new_real,
            "memorisation/nn_ratio": generated / new_real if new_real > 0 else float("nan")}
