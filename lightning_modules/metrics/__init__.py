"""Metrics of generated images behind one registry, used by the training callback
(``callbacks.SampleMetrics``) and ``evaluate.py`` (``evaluation.py``) alike.

The names are those of the configs, ``metrics.json`` and the logs: ``caption_accuracy`` (shapes),
``pairs`` (two-object relation scenes: ``pairs.py``),
``fid``, ``kid``, ``is``, ``clip_score``, and on real data with ``data.label_columns`` the reference
network's ``reference`` (FD, precision, recall), ``labels`` (label accuracy beside the real
ceiling) and ``memorisation``. Each :class:`Metric` says which network reads the images
(its ``reader``), which per-sample tensors it needs of the generated and of the real images, how
they become numbers, and its ``protocol``: what the number means, written next to it in
``metrics.json``. :class:`Readers` loads the networks the wanted metrics need, once; images go
through :meth:`Readers.read` (per-sample tensors, which several processes can gather), then
:func:`compute` turns the tensors of all samples into numbers.

Files: ``frechet.py`` (the one Frechet distance, float64), ``inception.py`` (TF-compatible
Inception features, FID, KID, IS, the real-feature cache), ``clip.py`` (CLIP score),
``caption_accuracy.py`` (the shapes oracle's reading -> caption accuracy, oracle FD),
``reference.py`` (the reference network of a real data set and its numbers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from datamodules.shapes import SUBSETS
from gan_ga_utils.distributed import rank_zero_first
from gan_ga_utils.errors import MetricsError
from lightning_modules.metrics import caption_accuracy, clip, inception, pairs, reference
from lightning_modules.metrics.shapes_oracle import INPUT_SIZE, load_or_train, renderer_digest

Tensors = dict[str, torch.Tensor]
READS = {"oracle": ("oracle_pred", "oracle_conf", "oracle_pose", "oracle_feat"), "inception": ("pool", "logits"),
         "clip": ("clip",), "reference": ("ref_feat", "ref_pred")}
REAL_DATA_METRICS = ("reference", "labels", "memorisation")  # the defaults on real data with label columns


@dataclass(frozen=True)
class Context:
    """What a metric needs besides the images' tensors."""

    seed: int  # the evaluation seed (KID subsets, IS shuffle)
    scenes: Sequence | None = None  # shapes: the scene each caption describes
    # (start, stop) of the evaluation set's parts: "main" (the split's captions, one sample each) and,
    # on shapes, the diversity blocks "open" and "spread" (prompts repeated); None: all is main
    blocks: dict | None = None
    labels: dict[str, torch.Tensor] | None = None  # real data: class index per label column of each main sample
    train_features: torch.Tensor | None = None  # real data: the reference features of the training images


@dataclass(frozen=True)
class Metric:
    name: str
    reader: str  # the network the images go through: oracle | inception | clip
    fake: tuple[str, ...]  # per-sample tensors of the generated images it needs
    real: tuple[str, ...]  # ... and of the real images
    compute: Callable[[Tensors, Tensors, Context], dict[str, float]]  # (fake, real, context) -> values
    headline: str  # the value a best checkpoint is chosen on
    better: str  # max | min
    protocol: dict = field(default_factory=dict)
    reference: tuple[str, ...] = ()  # values of the real images alone: constant during a training run
    reads_blocks: bool = False  # reads the evaluation set's diversity blocks too (else the main part only)


def _caption_accuracy(fake: Tensors, real: Tensors, context: Context) -> dict[str, float]:
    if context.scenes is None:
        raise MetricsError("metrics=[caption_accuracy] needs the shapes data set (a checkpoint trained on data=shapes)")
    return caption_accuracy.caption_accuracy(fake, real, context.scenes, context.blocks)


def _pairs(fake: Tensors, real: Tensors, context: Context) -> dict[str, float]:
    return pairs.pairs(fake, real, context.scenes)


def _fid(fake: Tensors, real: Tensors, context: Context) -> dict[str, float]:
    return {"fid": inception.fid(real["pool"], fake["pool"])}


def _kid(fake: Tensors, real: Tensors, context: Context) -> dict[str, float]:
    mean, std = inception.kid(real["pool"], fake["pool"], seed=context.seed)
    return {"kid": mean, "kid_std": std}


def _is(fake: Tensors, real: Tensors, context: Context) -> dict[str, float]:
    mean, std = inception.inception_score(fake["logits"], seed=context.seed)
    return {"is": mean, "is_std": std}


def _clip_score(fake: Tensors, real: Tensors, context: Context) -> dict[str, float]:
    return {"clip_score": float(fake["clip"].mean()), "clip_score_real": float(real["clip"].mean())}


def _reference(fake: Tensors, real: Tensors, context: Context) -> dict[str, float]:
    return reference.reference_scores(fake, real)


def _labels(fake: Tensors, real: Tensors, context: Context) -> dict[str, float]:
    if not context.labels:
        raise MetricsError("metrics=[labels] needs labelled real data: data.label_columns naming manifest columns")
    return reference.label_scores(fake, real, context.labels)


def _memorisation(fake: Tensors, real: Tensors, context: Context) -> dict[str, float]:
    if context.train_features is None:
        raise MetricsError("metrics=[memorisation] needs the reference network's training features")
    return reference.memorisation_scores(fake, real, context.train_features)


_POOL = "Inception pool features (2048-d)"
METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("caption_accuracy", "oracle", READS["oracle"], READS["oracle"], _caption_accuracy,
           headline="caption_accuracy/caption", better="max", protocol=caption_accuracy.PROTOCOL,
           reference=("caption_accuracy/real_reference", "diversity/real_open_tv",
                      *(f"caption_accuracy/{s}/real_reference" for s in SUBSETS)), reads_blocks=True),
    Metric("pairs", "oracle", ("oracle_pred",), ("oracle_pred",), _pairs, headline="pairs/scene", better="max",
           protocol=pairs.PROTOCOL,
           reference=("pairs/real_reference", *(f"pairs/{s}/real_reference" for s in SUBSETS))),
    Metric("fid", "inception", ("pool",), ("pool",), _fid, headline="fid", better="min",
           protocol={"features": _POOL, "definition": "Frechet distance of Gaussians fitted to the real and generated "
                                                        "features (float64; trace of the square root from the "
                                                        "eigenvalues of the covariance product, as torch-fidelity)"}),
    Metric("kid", "inception", ("pool",), ("pool",), _kid, headline="kid", better="min",
           protocol={"features": _POOL,
                     "definition": "unbiased MMD^2 with the kernel (x.y / 2048 + 1)^3: mean (kid) and std (kid_std) "
                                   "over 100 random subsets of min(1000, samples) of each set, drawn with the "
                                   "evaluation seed"}),
    Metric("is", "inception", ("logits",), (), _is, headline="is", better="max",
           protocol={"features": "Inception unbiased logits (1008)",
                     "definition": "exp(E KL(p(y|x) || p(y))) over 10 splits: mean (is) and population std "
                                   "(is_std); samples shuffled first with numpy RandomState(evaluation seed), as "
                                   "torch-fidelity"}),
    Metric("clip_score", "clip", ("clip",), ("clip",), _clip_score, headline="clip_score", better="max",
           protocol={"definition": clip.DEFINITION, "clip_score_real": "the real images with the same captions",
                     "resize": "the CLIP processor's"},
           reference=("clip_score_real",)),
    Metric("reference", "reference", ("ref_feat",), ("ref_feat",), _reference, headline="reference/fd",
           better="min", protocol=reference.PROTOCOL),
    Metric("labels", "reference", ("ref_pred",), ("ref_pred",), _labels, headline="labels/subgroup", better="max",
           protocol=reference.LABELS_PROTOCOL),
    Metric("memorisation", "reference", ("ref_feat",), ("ref_feat",), _memorisation,
           headline="memorisation/nn_ratio", better="max", protocol=reference.MEMORISATION_PROTOCOL,
           reference=("memorisation/nn_distance_real",)),
)}


def resolve(names: Sequence[str]) -> list[Metric]:
    """The registry's metrics of ``names``, in order; an unknown or empty list is a MetricsError."""
    names = list(names)
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise MetricsError(f"metrics={names}: allowed {list(METRICS)}")
    return [METRICS[n] for n in names]


def auto(datamodule, inception_weights=None) -> list[str]:
    """``metrics=auto``: the pairs metrics on relation scenes (``datamodules/shapes_pairs.py``),
    caption accuracy on other shapes; the reference network's metrics on real data with
    ``data.label_columns``; else FID when an Inception weights file is given; else none."""
    from datamodules.shapes import ShapesDataModule
    from datamodules.shapes_pairs import PairsShapesDataModule

    if isinstance(datamodule, PairsShapesDataModule):
        return ["pairs"]
    if isinstance(datamodule, ShapesDataModule):
        return ["caption_accuracy"]
    if getattr(datamodule, "label_columns", None):
        return list(REAL_DATA_METRICS)
    return ["fid"] if inception_weights else []


def wanted(metrics: Sequence[Metric], side: str) -> set[str]:
    """The per-sample tensors the metrics need of the ``fake`` or ``real`` images."""
    return {key for m in metrics for key in getattr(m, side)}


def compute(metrics: Sequence[Metric], fake: Tensors, real: Tensors, context: Context) -> dict[str, float]:
    values: dict[str, float] = {}
    start, stop = (context.blocks or {}).get("main", (0, None))
    for metric in metrics:
        if metric.reads_blocks or context.blocks is None:
            values.update(metric.compute(fake, real, context))
        else:
            main = {k: v[start:stop] for k, v in fake.items()}, {k: v[start:stop] for k, v in real.items()}
            values.update(metric.compute(*main, context))
    return values


def block_keys(metrics: Sequence[Metric], side: str) -> set[str]:
    """The per-sample tensors read of the diversity blocks too: only those of metrics that use them
    (every other network reads the main part only)."""
    return wanted([m for m in metrics if m.reads_blocks], side)


def read_rows(readers: Readers, images: torch.Tensor, captions: Sequence[str], keys: set[str], blocks: set[str],
              main_rows: int) -> Tensors:
    """``readers.read`` of a batch whose first ``main_rows`` rows belong to the evaluation set's main
    part and the rest to its diversity blocks: all ``keys`` of the main rows, only ``keys & blocks``
    of the others (a key's tensor holds the rows it was read for, in order)."""
    out = readers.read(images[:main_rows], list(captions[:main_rows]), keys) if main_rows and keys else {}
    if main_rows < len(images) and keys & blocks:
        rest = readers.read(images[main_rows:], list(captions[main_rows:]), keys & blocks)
        out.update({k: torch.cat([out[k], v]) if k in out else v for k, v in rest.items()})
    return out


class Readers:
    """The networks the metrics read images with, loaded once. ``dist`` (a Lightning strategy or
    Fabric): the shapes oracle is trained on process 0 only, the others then load it."""

    def __init__(self, metrics: Sequence[Metric], *, cache_dir: str | Path | None = None,
                 inception_weights: str | Path | None = None, clip_model: str | Path | None = None, dist=None,
                 datamodule=None, log=print):
        needed = {m.reader for m in metrics}
        self.inception_weights, self.clip_model = inception_weights, clip_model
        self.oracle = self.inception = self.clip = self.reference = None
        if "oracle" in needed:
            def load():
                return load_or_train(cache_dir, log=log)

            self.oracle = rank_zero_first(dist, load, "training the shapes oracle") if dist is not None else load()
        if "reference" in needed:
            def load_reference():  # refuses a data set without data.label_columns
                return reference.load_or_train(datamodule, getattr(datamodule, "label_columns", None), cache_dir,
                                               log=log)

            self.reference = (rank_zero_first(dist, load_reference, "training the reference network")
                              if dist is not None else load_reference())
        if "inception" in needed:
            self.inception = inception.load_inception(inception_weights)
        if "clip" in needed:
            self.clip = clip.load_clip(clip_model)

    def to(self, device) -> Readers:
        for net in (self.oracle, self.inception, self.clip[0] if self.clip else None, self.reference):
            if net is not None:
                net.to(device)
        return self

    @torch.no_grad()
    def read(self, images: torch.Tensor, captions: Sequence[str], keys: set[str]) -> Tensors:
        """Per-sample tensors ``keys`` (of :data:`READS`) of ``images`` in [-1, 1], on the CPU."""
        out: Tensors = {}
        if self.oracle is not None and keys & set(READS["oracle"]):
            out.update(caption_accuracy.oracle_readout(self.oracle, images))
        if self.inception is not None and keys & set(READS["inception"]):
            out["pool"], out["logits"] = inception.inception_features(self.inception, images)
        if self.clip is not None and "clip" in keys:
            out["clip"] = clip.clip_scores(images, list(captions), self.clip)
        if self.reference is not None and keys & set(READS["reference"]):
            out.update(reference.read(self.reference, images))
        missing = keys - set(out)
        if missing:
            raise MetricsError(f"no reader loaded for {sorted(missing)}")
        return {k: v for k, v in out.items() if k in keys}

    def protocol(self) -> dict:
        """How each loaded network reads images (written to metrics.json)."""
        out = {}
        if self.oracle is not None:
            out["oracle"] = {"renderer_digest": renderer_digest(), "input": f"{INPUT_SIZE}x{INPUT_SIZE}, area resize"}
        if self.inception is not None:
            digest = inception.weights_digest(self.inception_weights)
            out["inception"] = {**inception.PROTOCOL, "weights_sha256": digest}
        if self.clip is not None:
            out["clip"] = {"model": str(self.clip_model), "resize": "the CLIP processor's"}
        if self.reference is not None:
            out["reference"] = {"columns": {k: len(v) for k, v in self.reference.classes.items()},
                                "training_images": int(self.reference.train_features.shape[0]),
                                "train": reference.TRAIN, "digest": self.reference.digest}
        return out

    def context(self, seed: int, data) -> Context:
        """The :class:`Context` of an evaluation set (``evaluation.EvalSet``): its scenes and blocks and,
        with the reference network, its label targets and the training features."""
        labels = train = None
        if self.reference is not None:
            train = self.reference.train_features
            labels = self.reference.targets(data.labels) if data.labels else None
        return Context(seed=seed, scenes=data.scenes, blocks=data.blocks, labels=labels, train_features=train)
