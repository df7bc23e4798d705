"""The text-to-image GAN as one LightningModule with manual optimization.

Per batch (``training_step``):
  1. encode    captions -> TextFeatures (no grad when the encoder is frozen)
  2. D phase   ``n_critic`` times: real/matching, fake, real/mismatched pairs + MA-GP; D steps
  3. G phase   fresh noise -> fake -> adversarial loss through D; G (and a trainable encoder) steps
  4. EMA       the averaged generator follows G
Lightning's ``global_step`` counts optimizer steps (``n_critic + 1`` per batch); ``batches_seen``
counts batches and is the x-axis of every schedule and log.

Lazy regularisation (``gp_every`` = k > 1, StyleGAN2-ADA's scheme): the MA-GP leaves the D step and
runs as its own D step (weight x k) every k batches; D's Adam then steps k + 1 times per k batches,
so its learning rate is multiplied by k / (k + 1) and its betas raised to that power.

Each phase reads one :class:`BatchInputs` (images, text features, caption matches, mismatch
indices, the data set's negatives), built once per batch by ``batch_inputs``.

Divergence guard: every update goes through ``self.guard``, an :class:`UpdateGuard`
(``lightning_modules/update_guard.py``): ``norm, ok = self.guard.step(optimizer, loss)`` steps
unless the loss or gradient is not finite, clips by ``grad_clip_val`` and returns device tensors
(no host sync per step on a GPU with fused Adam); ``on_before_optimizer_step`` hands it the
gradients after a 16-mixed GradScaler has unscaled them. Skipped updates are counted in
``train/skipped_d`` / ``train/skipped_g``; after ``max_bad_batches`` batches in a row with a skipped
update, training stops with :class:`DivergenceError`. The streak is read on the host every batch
on a CPU and every ``trainer.log_every_n_steps`` batches on an accelerator.

Speed switches (see ``benchmarks/throughput.py``): ``compile`` (torch.compile of G and D; the
double-backward MA-GP step stays eager), ``channels_last`` (memory format of G, D and images),
the optimizers' ``fused`` / ``foreach`` options and ``trainer.precision``.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from gan_ga_utils.checks import Problems, check
from gan_ga_utils.errors import CheckpointError, DivergenceError
from lightning_modules.checkpointing import (
    divergence_message,
    restore_rng_states,
    rng_states,
    upgrade_data_position,
)
from lightning_modules.components.degrade import DEGRADE_POLICIES, degrade
from lightning_modules.components.ema import ema_beta, ema_update, make_ema
from lightning_modules.components.negatives import MISMATCH_MODES, Matches, caption_matches, mismatch_indices
from lightning_modules.components.text_encoders import FeatureMemo, TextEncoder, TextFeatures
from lightning_modules.losses import (
    LOSS_NAMES,
    RELATIVISTIC,
    contrastive_loss,
    discriminator_loss,
    fake_term,
    generator_loss,
    matching_aware_gradient_penalty,
    zero_centered_penalty,
)
from lightning_modules.sampling import Noise, sample_noise, seed_for
from lightning_modules.update_guard import UpdateGuard, count_skips

COMPILE_MODES = (False, True, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _arguments(node: Any) -> dict:
    """The keyword arguments of a config node or of the ``functools.partial`` built from it."""
    keywords = getattr(node, "keywords", None)
    if keywords is not None:
        return dict(keywords)
    return {} if node is None or callable(node) else dict(node)


def lazy_regularization_ratio(gp_every: int) -> float:
    """StyleGAN2-ADA's correction for a regulariser run as an extra step every ``gp_every`` batches."""
    return gp_every / (gp_every + 1) if gp_every > 1 else 1.0


class CompiledOrEager:
    """``torch.compile(fn)``; if compiling fails (no compiler, an unsupported op), one warning and
    the eager ``fn`` from then on."""

    def __init__(self, fn: Callable, name: str, mode: str | None):
        self.fn, self.name = fn, name
        self.compiled: Callable | None = torch.compile(fn, mode=mode, dynamic=False)

    def __call__(self, *args, **kwargs):
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - any compile failure falls back to eager
                first = (str(err).strip().splitlines() or [""])[0][:300]
                warnings.warn(f"gan-ga: torch.compile of the {self.name} failed ({type(err).__name__}: {first}); "
                              "running it eagerly (model.compile=false hides this warning)", stacklevel=2)
                self.compiled = None
        return self.fn(*args, **kwargs)


def unit_features(features: torch.Tensor) -> torch.Tensor:
    """Each image's D features flattened and scaled to unit length (float32): blind to the scale of
    D's features, which grows as D trains."""
    return torch.nn.functional.normalize(features.flatten(1).float(), dim=1)


def most_open_rows(named: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
    """The batch's rows ordered from the caption that names fewest attributes to the one that names
    most, earlier rows first among equals; in batch order without ``named`` (a data set that does
    not say what its captions name)."""
    if named is None:
        return torch.arange(n, device=device)
    return torch.argsort(named.flatten(1).sum(1).float() + torch.linspace(0, 0.5, len(named), device=named.device))


@dataclass(frozen=True)
class BatchInputs:
    """What the phases of one training batch read, built once by ``TextToImageGAN.batch_inputs``:
    the real images, their captions' features, which captions are true of which image
    (:class:`Matches`), each image's mismatched caption index (into the captions, then the
    negatives), and the data set's own negative captions (None without them)."""

    images: torch.Tensor
    text: TextFeatures
    matches: Matches
    mismatch: torch.Tensor
    negatives: TextFeatures | None = None
    redraws: torch.Tensor | None = None  # [B, K, 3, H, W]: other renders of each caption (data.redraws)
    named: torch.Tensor | None = None  # [B, O, 4] bool: what each caption names (shapes)

    @classmethod
    def plain(cls, images: torch.Tensor, text: TextFeatures) -> "BatchInputs":
        """Each image true of its own caption only, mismatched with the next image's; no negatives."""
        n = images.shape[0]
        return cls(images, text, Matches.identity(n, n, images.device), torch.arange(n, device=images.device).roll(1))


OPTIMIZER_SETTINGS = ("lr", "betas", "eps", "weight_decay", "momentum")

# keys that differ between any two runs and change nothing about training
_RUN_LOCAL_KEYS = ("paths.", "resume", "ckpt_path", "logger.", "hydra.", "task_name", "tags")


def state_misfits(own: dict, loaded: dict) -> list[str]:
    """How a loaded state dict does not fit a module's: missing and unexpected keys, other shapes."""
    misfits = [f"{k}: checkpoint {tuple(loaded[k].shape)}, model {tuple(v.shape)}"
               for k, v in own.items() if k in loaded and tuple(loaded[k].shape) != tuple(v.shape)]
    misfits += [f"{k}: not in the checkpoint" for k in own if k not in loaded]
    misfits += [f"{k}: not in the model" for k in loaded if k not in own]
    return misfits


def config_changes(before: dict, after: dict, prefix: str = "") -> list[str]:
    """``KEY: OLD -> NEW`` for every leaf of two run configs that differs (run-local keys left out)."""
    changes = []
    for key in sorted(set(before) | set(after), key=str):
        path = f"{prefix}{key}"
        if path.startswith(_RUN_LOCAL_KEYS) or f"{path}.".startswith(_RUN_LOCAL_KEYS):
            continue
        old, new = before.get(key, "<unset>"), after.get(key, "<unset>")
        if isinstance(old, dict) and isinstance(new, dict):
            changes += config_changes(old, new, f"{path}.")
        elif old != new:
            changes.append(f"{path}: {old!r} -> {new!r}")
    return changes


class TextToImageGAN(L.LightningModule):
    def __init__(
        self,
        *,
        encoder: TextEncoder,
        generator: Callable[..., nn.Module],
        discriminator: Callable[..., nn.Module],
        fusion: Callable[..., nn.Module],
        augment: nn.Module | None = None,
        optimizer_g: Callable[..., torch.optim.Optimizer],
        optimizer_d: Callable[..., torch.optim.Optimizer],
        scheduler_g: Callable[..., Any] | None = None,
        scheduler_d: Callable[..., Any] | None = None,
        image_size: int = 32,
        z_dim: int = 100,
        loss: str = "hinge",
        n_critic: int = 1,
        gp_weight: float = 2.0,
        gp_power: float = 6.0,
        gp_every: int = 1,
        ema_beta: float = 0.999,
        ema_warmup: bool = True,
        grad_clip_val: float = 0.0,
        max_bad_batches: int = 20,
        compile: bool | str = False,
        reuse_fake: bool = False,
        channels_last: bool = False,
        mismatch: str = "roll",
        data_negatives: bool = False,
        contrastive_weight: float = 0.0,
        contrastive_temperature: float = 0.1,
        diversity_weight: float = 0.0,
        diversity_start: int = 0,
        mmd_weight: float = 0.0,
        mmd_rows: int = 2,
        degraded_weight: float = 0.0,
        degraded_policy: str | None = None,
        degraded_sigma: Sequence[float] = (0.7, 1.4),
        sample_prompts: Sequence[str] = (),
        samples_per_prompt: int = 8,
        sample_dir: str | None = None,
        seed: int = 0,
    ):
        super().__init__()
        check(type(self), {k: v for k, v in locals().items() if k not in ("self", "__class__")}, "model")
        self.automatic_optimization = False
        self.encoder = encoder
        dims = dict(text_dim=encoder.out_dim, token_dim=encoder.out_dim)
        self.generator = generator(image_size=image_size, z_dim=z_dim, fusion=fusion, **dims)
        self.discriminator = discriminator(image_size=image_size, text_dim=encoder.out_dim, token_dim=encoder.out_dim)
        self.generator_ema = make_ema(self.generator)
        self.augment = augment if augment is not None and getattr(augment, "enabled", True) else None
        self.optimizer_g, self.optimizer_d = optimizer_g, optimizer_d
        self.scheduler_g, self.scheduler_d = scheduler_g, scheduler_d
        self.z_dim, self.loss_kind, self.n_critic = z_dim, loss, n_critic
        self.gp_weight, self.gp_power, self.gp_every = gp_weight, gp_power, gp_every
        self.ema_beta_max, self.ema_warmup = ema_beta, ema_warmup
        self.guard = UpdateGuard(self, grad_clip_val)  # every update: backward, check, clip, step or skip
        self.max_bad_batches = max_bad_batches
        self.mismatch, self.data_negatives, self.contrastive_weight = mismatch, data_negatives, contrastive_weight
        self.contrastive_temperature = contrastive_temperature
        self.diversity_weight, self.diversity_start = diversity_weight, diversity_start
        self.mmd_weight, self.mmd_rows = mmd_weight, mmd_rows
        self.degraded_weight = degraded_weight if degraded_policy is not None else 0.0
        self.degraded_policy = degraded_policy
        self.degraded_sigma = (float(degraded_sigma[0]), float(degraded_sigma[1]))
        self.compile_mode, self.channels_last, self.reuse_fake = compile, channels_last, reuse_fake
        self._fast: dict[str, Callable] = {}  # compiled callables (a plain dict: not submodules, not in state_dict)
        self.text_memo = FeatureMemo()  # a frozen encoder's features of the training captions, once each
        self._batches = 0  # host copy of ``batches_seen``: seeds and schedules never read the device
        self.sample_prompts = list(sample_prompts)
        self.sample_dir = sample_dir
        self.seed = seed
        self.run_config: dict | None = None  # set by train.py; saved in checkpoints for generate.py
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.long))
        # divergence guard: updates skipped (non-finite loss or gradient), and batches in a row with one
        self.register_buffer("skipped_d", torch.zeros((), dtype=torch.long))
        self.register_buffer("skipped_g", torch.zeros((), dtype=torch.long))
        self.register_buffer("bad_streak", torch.zeros((), dtype=torch.long))
        self.register_buffer("sample_z", sample_noise(samples_per_prompt, z_dim, seed=seed_for(seed, Noise.VAL)))
        self._last_step_time: float | None = None

    @classmethod
    def config_problems(cls, values, key: str = "model") -> list[str]:
        """What is wrong with these constructor values (see ``gan_ga_utils/checks.py``). The
        optimizers and the discriminator are read as config nodes or as the partials built from them."""
        p = Problems(values, key)
        p.choice("loss", LOSS_NAMES)
        if values.get("loss") == RELATIVISTIC and (values.get("gp_every") or 1) <= 1:
            p.append(f"{key}.loss=relativistic takes its R1 + R2 penalties as a lazy step: set {key}.gp_every "
                     f"to 2 or more (it is {values.get('gp_every')!r})")
        p.choice("compile", COMPILE_MODES)
        p.choice("mismatch", MISMATCH_MODES)
        for name in ("z_dim", "n_critic", "samples_per_prompt", "max_bad_batches"):
            p.number(name, 1, integer=True)
        p.number("gp_weight", 0)
        p.number("gp_power", 0, low_open=True)
        p.number("gp_every", 1, integer=True)
        p.number("ema_beta", 0, 1, high_open=True)  # 1 would keep the EMA generator at its initial weights
        p.number("grad_clip_val", 0)
        p.number("contrastive_weight", 0)
        p.number("diversity_weight", 0)
        p.number("diversity_start", 0, integer=True)
        p.number("mmd_weight", 0)
        p.number("mmd_rows", 1, integer=True)
        p.number("degraded_weight", 0)
        if values.get("degraded_policy") is not None:
            p.choice("degraded_policy", DEGRADE_POLICIES)
        p.pair("degraded_sigma", 0, low_open=True, ordered=True, example="[0.7,1.4] (blur widths in pixels)")
        p.number("contrastive_temperature", 0, low_open=True)
        for name in ("optimizer_g", "optimizer_d"):
            opt = Problems(_arguments(values.get(name)), f"{key}.{name}")
            opt.number("lr", 0, low_open=True)
            opt.pair("betas", 0, 1, high_open=True, example="[0.0,0.99]")
            opt.need(not (opt.values.get("fused") and opt.values.get("foreach")), "fused",
                     f"fused=true and foreach=true exclude each other: set {key}.{name}.foreach=null")
            p += opt
        matcher = _arguments(values.get("discriminator")).get("word_matching", False)
        if (values.get("contrastive_weight") or 0) > 0 and not matcher:
            p.append(f"{key}.contrastive_weight={values['contrastive_weight']!r} compares D's word-region similarities: "
                     f"set {key}.discriminator.word_matching=true (or {key}.contrastive_weight=0)")
        return p

    # ------------------------------------------------------------------ the step, in reading order
    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        inputs = self.batch_inputs(batch)
        # reuse_fake (DF-GAN's loop): one generator forward per batch; D judges its detached output,
        # then the G step back-propagates through the same images (judged by the updated D)
        fake = self.fast("generator")(self.noise(len(inputs.text), Noise.G), inputs.text) if self.reuse_fake else None
        d_logs, d_ok = self.discriminator_phase(inputs, opt_d, lambda critic: fake)
        with self.toggled_optimizer(opt_g):
            g_logs, g_ok = self.generator_step(inputs, opt_g, fake)
        self.end_batch(d_logs, g_logs, d_ok, g_ok, inputs.images.shape[0])

    def batch_inputs(self, batch: dict) -> BatchInputs:
        """The batch's images, text features, caption matches, mismatch indices and the data set's
        negatives, once for every phase."""
        images = batch["image"]
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        text, negatives = self.text_and_negatives(batch)
        matches, mismatch = self.pairs(batch, text, negatives)
        return BatchInputs(images, text, matches, mismatch, negatives, batch.get("redraws"), batch.get("named"))

    def discriminator_phase(self, inputs: BatchInputs, optimizer,
                            fake_of: Callable[[int], torch.Tensor | None]) -> tuple[dict, torch.Tensor]:
        """``n_critic`` D steps (``fake_of(critic)``: D's fakes of that step, None: fresh ones), then
        the lazy MA-GP step on its batches. D reads the captions detached (a trainable encoder learns
        through G only). Returns (logs, every step taken)."""
        inputs = replace(inputs, text=inputs.text.detach())
        ok_all = torch.ones((), dtype=torch.bool, device=self.device)
        with self.toggled_optimizer(optimizer):
            for critic in range(self.n_critic):
                logs, ok = self.discriminator_step(inputs, optimizer, critic, fake_of(critic))
                ok_all = ok_all & ok
            if self.gp_weight > 0 and self.gp_every > 1 and self._batches % self.gp_every == 0:
                reg_logs, ok = self.regularization_step(inputs, optimizer)
                logs, ok_all = {**logs, **reg_logs}, ok_all & ok
        return logs, ok_all

    def end_batch(self, d_logs: dict, g_logs: dict, d_ok: torch.Tensor, g_ok: torch.Tensor, batch_size: int) -> None:
        """After the phases: skip counts, the EMA update, schedulers, the batch counters, logs."""
        self._count_skips(d_ok, g_ok)
        ema_update(self.generator_ema, self.generator, ema_beta(self._batches, self.ema_beta_max, self.ema_warmup))
        for scheduler in self._schedulers():
            scheduler.step()
        self.batches_seen += 1
        self._batches += 1
        opt_g, opt_d = self.optimizers()
        self._log_training(d_logs, g_logs, opt_g, opt_d, batch_size)

    def discriminator_step(self, inputs: BatchInputs, optimizer, critic: int,
                           fake: torch.Tensor | None = None) -> tuple[dict, torch.Tensor]:
        """Real/matching pairs -> real; fakes (``fake``, or fresh ones of the captions) and
        real/mismatched pairs -> fake (+ MA-GP, + the contrastive term of the real images against the
        batch's captions and negatives)."""
        images, text, negatives = inputs.images, inputs.text, inputs.negatives
        n = images.shape[0]
        if fake is None:
            with torch.no_grad():
                fake = self.fast("generator")(self.noise(n, Noise.D, critic), text)
        fake = fake.detach()
        use_gp = self.gp_weight > 0 and self.gp_every == 1  # DF-GAN: the MA-GP inside every D step
        features, judge = ((self.discriminator.features, self.discriminator.judge) if use_gp  # double backward: eager
                           else (self.fast("d_features"), self.fast("d_judge")))
        images = images.detach().requires_grad_(use_gp)
        sentence = text.pooled.detach().requires_grad_(use_gp)
        captions = text if negatives is None else TextFeatures.cat([text, negatives])
        sentences = sentence if negatives is None else torch.cat([sentence, negatives.pooled])
        real, mismatched, similarity = judge(features(self.d_input(images, Noise.AUG_REAL, critic)), sentences,
                                             captions.tokens, captions.mask, inputs.mismatch)
        degraded = None
        if self.degraded_weight > 0:  # real images degraded as G's failures look, judged with the fakes in one pass
            rng = torch.Generator().manual_seed(seed_for(self.seed, self.global_rank, self._batches, Noise.DEGRADE,
                                                         critic))
            degraded = degrade(images.detach(), self.degraded_policy, self.degraded_sigma, rng)
            fake = torch.cat([fake, degraded])
            judged = TextFeatures.cat([text, text])
        else:
            judged = text
        fake_logits, _, _ = judge(features(self.d_input(fake, Noise.AUG_FAKE, critic)), judged.pooled, judged.tokens,
                                  judged.mask)
        if degraded is not None:
            fake_logits, degraded_logits = fake_logits[:n], fake_logits[n:]
        terms = discriminator_loss(self.loss_kind, real, fake_logits, mismatched)
        loss = terms["total"]
        if degraded is not None:
            terms["degraded"] = fake_term(self.loss_kind, real, degraded_logits)
            loss = loss + self.degraded_weight * terms["degraded"]
        if self.contrastive_weight > 0:
            terms["contrastive"] = contrastive_loss(similarity, inputs.matches.of_images, self.contrastive_temperature)
            loss = loss + self.contrastive_weight * terms["contrastive"]
        if use_gp:
            terms["gp"] = matching_aware_gradient_penalty(real, images, sentence, weight=self.gp_weight,
                                                          power=self.gp_power)
            loss = loss + terms["gp"]
        terms["grad_norm"], ok = self.guard.step(optimizer, loss)
        terms["margin"] = real.mean() - fake_logits.mean()
        terms["loss"] = loss
        return {f"d_{k}": v.detach() for k, v in terms.items() if k != "total"}, ok

    def regularization_step(self, inputs: BatchInputs, optimizer) -> tuple[dict, torch.Tensor]:
        """Lazy penalty (``gp_every`` > 1), weighted by ``gp_every``, as its own D step: the MA-GP on
        real pairs, or with ``loss=relativistic`` R3GAN's zero-centred R1 (real pairs, image and
        sentence) + R2 (fakes of the same captions), ``gp_weight`` their gamma."""
        text = inputs.text
        images = inputs.images.detach().requires_grad_(True)
        sentence = text.pooled.detach().requires_grad_(True)
        real = self.discriminator(self.d_input(images, Noise.AUG_REAL), sentence, text.tokens, text.mask)  # eager
        weight = self.gp_weight * self.gp_every
        if self.loss_kind == RELATIVISTIC:
            with torch.no_grad():
                fake = self.fast("generator")(self.noise(len(text), Noise.D, self.n_critic), text)
            fake = fake.detach().requires_grad_(True)
            fake_logits = self.discriminator(self.d_input(fake, Noise.AUG_FAKE), sentence.detach(), text.tokens,
                                             text.mask)
            gp = (zero_centered_penalty(real, (images, sentence), weight=weight)
                  + zero_centered_penalty(fake_logits, (fake,), weight=weight))
        else:
            gp = matching_aware_gradient_penalty(real, images, sentence, weight=weight, power=self.gp_power)
        norm, ok = self.guard.step(optimizer, gp, counted=False)  # global_step stays n_critic + 1 per batch
        return {"d_gp": gp.detach(), "d_gp_grad_norm": norm}, ok

    def generator_step(self, inputs: BatchInputs, optimizer,
                       fake: torch.Tensor | None = None) -> tuple[dict, torch.Tensor]:
        """Fakes (``fake``, or fresh ones) judged by D against their captions (+ the contrastive term:
        each fake must match its own caption better than the batch's other captions and negatives).
        D reads the text detached: a trainable encoder learns only through G."""
        text, negatives, images = inputs.text, inputs.negatives, inputs.images
        if fake is None:
            fake = self.fast("generator")(self.noise(len(text), Noise.G), text)
        judged = text.detach() if negatives is None else TextFeatures.cat([text.detach(), negatives.detach()])
        features = self.fast("d_features")(self.d_input(fake, Noise.AUG_G))
        logits, _, similarity = self.fast("d_judge")(features, judged.pooled, judged.tokens, judged.mask)
        real = None
        if self.loss_kind == RELATIVISTIC:  # the real pairs' logits under the current D (no gradient needed)
            with torch.no_grad():
                real = self.discriminator(self.d_input(images, Noise.AUG_REAL), text.pooled.detach(),
                                          text.tokens.detach(), text.mask)
        loss = adversarial = generator_loss(self.loss_kind, logits, real)
        logs = {"g_adversarial": adversarial.detach()}
        if self.diversity_weight > 0 and self._batches >= self.diversity_start:
            seeking = self.mode_seeking(text, features)
            loss = loss + self.diversity_weight * seeking
            logs["g_mode_seeking"] = seeking.detach()
        if self.mmd_weight > 0 and self._batches >= self.diversity_start:
            mmd = self.caption_mmd(inputs)
            loss = loss + self.mmd_weight * mmd
            logs["g_mmd"] = mmd.detach()
        if self.contrastive_weight > 0:
            contrastive = contrastive_loss(similarity, inputs.matches.of_captions, self.contrastive_temperature)
            loss = loss + self.contrastive_weight * contrastive
            logs["g_contrastive"] = contrastive.detach()
        norm, ok = self.guard.step(optimizer, loss)
        return {**logs, "g_loss": loss.detach(), "g_grad_norm": norm}, ok

    def mode_seeking(self, text: TextFeatures, features) -> torch.Tensor:
        """A mode-seeking term (MSGAN, DSGAN) on D's features: the first quarter of the batch's
        captions again with other noise; the loss is minus the mean distance between the two images'
        D feature maps, each scaled to unit length (the chord between them, in [0, 2]), so G loses
        when two noises of one caption give images D sees alike. Unit length makes it blind to the
        scale of D's features, which grows as D trains; the chord's gradient does not vanish when
        the two images are equal (a cosine's does), and it is bounded where MSGAN's ``1 / distance``
        explodes while G still ignores its noise."""
        h = max(1, len(text) // 4)
        twin = self.fast("generator")(self.noise(h, Noise.G_TWIN), text.index(slice(0, h)))
        twin_features = self.fast("d_features")(self.d_input(twin, Noise.AUG_G))
        chord = lambda a, b: (unit_features(a[:h]) - unit_features(b)).norm(dim=1).mean()  # noqa: E731
        if features.pooled is None:
            return -chord(features.map, twin_features.map)
        # with the finer map the projection reads: the 4x4 map weighs 2/3, that map 1/3 (two terms of
        # the 4x4 map, each with its own graph, as the measured default runs computed it)
        chords = [chord(features.map, twin_features.map), chord(features.map, twin_features.map),
                  chord(features.pooled, twin_features.pooled)]
        return -sum(chords) / len(chords)

    def caption_mmd(self, inputs: BatchInputs) -> torch.Tensor:
        """The squared MMD, per caption, between K fakes of it and K other renders of it (the data's
        ``redraws``), in D's unit-length 4x4 features (a sum of Gaussian kernels), averaged over the
        ``mmd_rows`` captions of the batch that leave the most open. Fakes repel each other and are
        drawn to the real renders, so a caption's fakes spread as its renders do: a colour the words
        leave open that no fake shows is a real render with no fake near it."""
        redraws, text = inputs.redraws, inputs.text
        if redraws is None:
            raise ValueError("model.mmd_weight > 0 compares fakes with other renders of their caption: the data "
                             "must yield `redraws` (data=shapes: set data.redraws to 2 or more)")
        rows = most_open_rows(inputs.named, len(text), redraws.device)[: self.mmd_rows]
        n, k = len(rows), redraws.shape[1]
        fake = self.fast("generator")(self.noise(n * k, Noise.G_MMD), text.index(rows.repeat_interleave(k)).detach())
        f = unit_features(self.fast("d_features")(self.d_input(fake, Noise.AUG_G)).map).view(n, k, -1)
        with torch.no_grad():
            real = redraws[rows].flatten(0, 1)
            r = unit_features(self.fast("d_features")(self.d_input(real, Noise.AUG_REAL)).map).view(n, k, -1)

        def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # [n, k, d] x [n, k, d] -> [n, k, k]
            d2 = torch.cdist(a, b).square()
            return sum(torch.exp(-d2 / (2 * s * s)) for s in (0.25, 0.5, 1.0))

        off = 1.0 - torch.eye(k, device=f.device)
        fake_fake = (kernel(f, f) * off).sum((1, 2)) / (k * (k - 1))
        fake_real = kernel(f, r).mean((1, 2))
        real_real = (kernel(r, r) * off).sum((1, 2)) / (k * (k - 1))
        return (fake_fake - 2 * fake_real + real_real).mean()

    def on_before_optimizer_step(self, optimizer) -> None:
        """Runs inside ``optimizer.step()``, after a 16-mixed GradScaler's ``unscale_``: the update
        guard measures, clips and decides there (``lightning_modules/update_guard.py``)."""
        self.guard.check(optimizer)

    def _count_skips(self, d_ok: torch.Tensor, g_ok: torch.Tensor) -> None:
        count_skips(self.skipped_d, self.skipped_g, self.bad_streak, d_ok, g_ok)
        check = self.device.type == "cpu" or self._trainer is None or self._batches % self.trainer.log_every_n_steps == 0
        if check and int(self.bad_streak) >= self.max_bad_batches:
            raise DivergenceError(divergence_message(self))

    def _log_training(self, d_logs: dict, g_logs: dict, opt_g, opt_d, batch_size: int) -> None:
        """Device tensors go to the logger as they are (read at its flush); the progress bar, which
        reads its values at once, gets them only on those batches. Only the batches the logger writes
        (every ``log_every_n_steps``) are logged: Lightning keeps just the latest step value, and a
        ``log_dict`` of two dozen values costs about 14 ms, 5% of a CPU batch of 16."""
        now = time.perf_counter()
        images_per_sec = None
        if self._last_step_time is not None:
            images_per_sec = batch_size * self.trainer.world_size / max(now - self._last_step_time, 1e-9)
        self._last_step_time = now
        if not (self._batches % self.trainer.log_every_n_steps == 0 or self.trainer.should_stop
                or self.trainer.fast_dev_run):  # Lightning writes the logs of these batches only
            return
        logs = {f"train/{k}": v for k, v in {**d_logs, **g_logs}.items()}
        logs["train/lr_g"] = opt_g.param_groups[0]["lr"]
        logs["train/lr_d"] = opt_d.param_groups[0]["lr"]
        logs["train/batches"] = float(self._batches)
        logs["train/skipped_d"] = self.skipped_d.float()
        logs["train/skipped_g"] = self.skipped_g.float()
        if images_per_sec is not None:
            logs["perf/images_per_sec"] = images_per_sec
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=batch_size)
        if self._batches % self.trainer.log_every_n_steps == 0:
            bar = {"d": d_logs["d_loss"], "g": g_logs["g_loss"]}
            if "perf/images_per_sec" in logs:
                bar["img/s"] = logs["perf/images_per_sec"]
            self.log_dict(bar, prog_bar=True, on_step=True, logger=False, batch_size=batch_size)

    # ------------------------------------------------------------------ what the step reads
    def pairs(self, batch: dict, text: TextFeatures, negatives: TextFeatures | None) -> tuple[Matches, torch.Tensor]:
        """Which captions (then negatives, when it has them) are true of which image
        (:func:`caption_matches`) and each image's mismatched caption index (into the captions, then
        the negatives)."""
        n = len(text)
        matches = caption_matches(batch, n, self.device, negatives=negatives is not None)
        if negatives is not None:
            return matches, torch.arange(n, 2 * n, device=self.device)
        rng = torch.Generator().manual_seed(seed_for(self.seed, self.global_rank, self._batches, Noise.MISMATCH))
        return matches, mismatch_indices(self.mismatch, matches.of_images, text.pooled, rng)

    def encode(self, captions: Sequence[str]) -> TextFeatures:
        return self.encoder(captions)

    def encode_training(self, *caption_lists: Sequence[str]) -> list[TextFeatures]:
        """Training captions, a list of features per list: a frozen encoder's come from ``text_memo``
        (each caption encoded once, the new ones of all the lists in one encoder call), a trainable
        encoder runs on each list."""
        if self.encoder.frozen:
            return self.text_memo.many(self.encoder, *caption_lists)
        return [self.encode(captions) for captions in caption_lists]

    def text_and_negatives(self, batch: dict, negatives: bool = True) -> tuple[TextFeatures, TextFeatures | None]:
        """The batch's text features, read from the data module's cache when it sent them (the encoder
        does not run for them), and, when ``negatives`` and ``data_negatives`` are on and the batch has
        them, the data set's own mismatched captions (``negative_caption``) encoded (else None)."""
        cached = "text_tokens" in batch
        with_negatives = negatives and self.data_negatives and "negative_caption" in batch
        lists = [batch[key] for key, wanted in (("caption", not cached), ("negative_caption", with_negatives)) if wanted]
        encoded = iter(self.encode_training(*lists))
        text = TextFeatures.from_batch(batch, dtype=next(self.generator.parameters()).dtype) if cached else next(encoded)
        negative = next(encoded) if with_negatives else None
        if self._fast:
            text = self._fixed_length(text)
            negative = self._fixed_length(negative) if negative is not None else None
        return text, negative

    def text_of(self, batch: dict) -> TextFeatures:
        """The batch's text features (:meth:`text_and_negatives` without the negatives)."""
        return self.text_and_negatives(batch, negatives=False)[0]

    def _fixed_length(self, text: TextFeatures) -> TextFeatures:
        """Compiled networks see one token length (``encoder.max_length``, padding masked), not the
        longest caption of each batch: no recompilation, and no dynamic-shape kernels."""
        return text.padded(int(self.encoder.max_length))

    def d_input(self, images: torch.Tensor, purpose: int, critic: int = 0) -> torch.Tensor:
        """What D sees: the images through the differentiable augmentation, when one is configured."""
        if self.augment is None:
            return images
        rng = torch.Generator().manual_seed(seed_for(self.seed, self.global_rank, self._batches, purpose, critic))
        return self.augment(images, generator=rng)

    def noise(self, n: int, purpose: int, critic: int = 0) -> torch.Tensor:
        """Each rank, batch, phase and critic step draws its own noise, reproducibly (and so on resume),
        on the CPU whatever the device (the same noise on every machine); the copy does not wait."""
        s = seed_for(self.seed, self.global_rank, self._batches, purpose, critic)
        return sample_noise(n, self.z_dim, seed=s).to(self.device, non_blocking=True)

    # ------------------------------------------------------------------ setup
    def configure_optimizers(self):
        g_params = list(self.generator.parameters()) + [p for p in self.encoder.parameters() if p.requires_grad]
        opt_g = self.optimizer_g(params=g_params)
        opt_d = self.optimizer_d(params=self.discriminator.parameters())
        ratio = lazy_regularization_ratio(self.gp_every if self.gp_weight > 0 else 1)
        for group in opt_d.param_groups if ratio != 1.0 else []:
            group["lr"] *= ratio
            if "betas" in group:
                group["betas"] = tuple(b**ratio for b in group["betas"])
        schedulers = [s(optimizer=o) for s, o in ((self.scheduler_g, opt_g), (self.scheduler_d, opt_d)) if s]
        # what this run's config asks for; a resume restores the checkpoint's values over these, and
        # on_train_start puts these back (see ``apply_configured_hyperparameters``)
        self._configured_groups = [[{k: v for k, v in g.items() if k in OPTIMIZER_SETTINGS} for g in o.param_groups]
                                   for o in (opt_g, opt_d)]
        return [opt_g, opt_d], schedulers

    def setup(self, stage: str) -> None:
        if self.channels_last:
            for net in (self.generator, self.discriminator, self.generator_ema):
                net.to(memory_format=torch.channels_last)
        if self.compile_mode and not self._fast:
            mode = None if self.compile_mode is True else self.compile_mode
            self._fast = {name: CompiledOrEager(fn, name, mode) for name, fn in self._network_calls().items()}

    def _apply(self, fn, recurse: bool = True):
        """Moves and casts apply to everything but the EMA generator's dtype: it stays float32, as a
        lerp of weight 1e-3 rounds away in 16-bit (``precision=bf16-true`` / ``16-true``)."""
        super()._apply(fn, recurse)
        for t in (*self.generator_ema.parameters(), *self.generator_ema.buffers()):
            if t.is_floating_point() and t.dtype != torch.float32:
                t.data = t.data.float()
        return self

    def _network_calls(self) -> dict[str, Callable]:
        """The network calls of the training step, by name (what ``model.compile`` compiles)."""
        return {"generator": self.generator, "d_features": self.discriminator.features,
                "d_judge": self.discriminator.judge}

    def fast(self, name: str) -> Callable:
        """The compiled form of a network call when ``model.compile`` is on, else the eager one."""
        return self._fast[name] if self._fast else self._network_calls()[name]

    def generate_ema(self, z: torch.Tensor, text: TextFeatures) -> torch.Tensor:
        """Images from the EMA generator (float32 whatever the training precision)."""
        dtype = next(self.generator_ema.parameters()).dtype
        text = TextFeatures(text.tokens.to(dtype), text.mask, text.pooled.to(dtype))
        return self.generator_ema(z.to(device=self.device, dtype=dtype), text)

    def on_train_start(self) -> None:
        self._batches = int(self.batches_seen)  # one read, after a resume has loaded the buffer
        self.apply_configured_hyperparameters()

    def apply_configured_hyperparameters(self) -> None:
        """After a resume, the optimizers' learning rates, betas, eps and weight decay are this run's
        config, not the checkpoint's (Lightning restores the checkpoint's); a schedule restarts its
        base from the new learning rate."""
        configured = getattr(self, "_configured_groups", None)
        if not configured or self._trainer is None:
            return
        schedulers = {id(s.optimizer): s for s in self._schedulers()}
        for optimizer, groups in zip(self.trainer.optimizers, configured):
            for i, (group, wanted) in enumerate(zip(optimizer.param_groups, groups)):
                for key, value in wanted.items():
                    if key in group and group[key] != value:
                        group[key] = value
                        if key == "lr" and "initial_lr" in group:
                            group["initial_lr"] = value
                            scheduler = schedulers.get(id(optimizer))
                            if scheduler is not None:
                                scheduler.base_lrs[i] = value

    def train(self, mode: bool = True):
        super().train(mode)
        self.generator_ema.eval()  # the average is never in training mode (BatchNorm statistics)
        return self

    def _schedulers(self) -> list:
        schedulers = self.lr_schedulers()
        return [] if schedulers is None else schedulers if isinstance(schedulers, list) else [schedulers]

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        images, text = batch["image"], self.text_of(batch)
        mismatch = torch.arange(images.shape[0], device=self.device).roll(1)
        real, mismatched, _ = self.discriminator.judge(self.discriminator.features(images), text.pooled, text.tokens,
                                                       text.mask, mismatch)
        z = sample_noise(images.shape[0], self.z_dim, seed=seed_for(self.seed, Noise.VAL, batch_idx)).to(self.device)
        fake = self.discriminator(self.generate_ema(z, text), text.pooled, text.tokens, text.mask)
        self.log_dict(
            {"val/d_real": real.mean(), "val/d_fake": fake.mean(), "val/d_mismatch": mismatched.mean(),
             "val/match_margin": (real - mismatched).mean(), "val/real_fake_margin": (real - fake).mean()},
            on_epoch=True, sync_dist=True, batch_size=images.shape[0],
        )

    @torch.no_grad()
    def sample(self, prompts: Sequence[str], z: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Images of every prompt with every noise row: [len(prompts) * len(z), 3, H, W], prompt-major;
        ``batch_size``: at most that many images per generator call (at least one prompt's)."""
        prompts = list(prompts)
        per_call = max(1, int(batch_size) // z.shape[0]) if batch_size else len(prompts)
        if per_call < len(prompts):
            return torch.cat([self.sample(prompts[i : i + per_call], z) for i in range(0, len(prompts), per_call)])
        return self.sample_features(self.encode(prompts), z)

    @torch.no_grad()
    def sample_features(self, text: TextFeatures, z: torch.Tensor) -> torch.Tensor:
        """:meth:`sample` from captions' features (e.g. the tokens of one caption with the sentence
        vector of another): every caption with every noise row, prompt-major."""
        k = z.shape[0]
        expand = lambda t: t.repeat_interleave(k, dim=0)  # noqa: E731
        return self.generate_ema(z.repeat(len(text), 1), TextFeatures(expand(text.tokens), expand(text.mask),
                                                                    expand(text.pooled)))

    # ------------------------------------------------------------------ checkpoints
    def complete_state_dict(self, state: dict) -> None:
        """A checkpoint's state dict made loadable, in place: the frozen encoder's weights (left out
        of checkpoints) and the divergence counters of older checkpoints ([D, G, streak] in one)."""
        if not any(k.startswith("encoder.") for k in state):
            state.update({f"encoder.{k}": v for k, v in self.encoder.state_dict().items()})
        if "skipped" in state:
            for name, value in zip(("skipped_d", "skipped_g", "bad_streak"), state.pop("skipped")):
                state[name] = value.clone()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["gan_ga"] = {"config": self.run_config, "batches_seen": int(self.batches_seen),
                                "encoder_weights_saved": self.encoder.weights_in_checkpoint,
                                "rng": rng_states()}
        if not self.encoder.weights_in_checkpoint:  # frozen pretrained weights are reloaded from their source
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("encoder.")}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        changed = config_changes((checkpoint.get("gan_ga") or {}).get("config") or {}, self.run_config or {})
        if changed:
            rank_zero_warn("gan-ga: resuming with settings that differ from the checkpoint's; this run's take effect "
                           "(optimizer settings included): " + "; ".join(changed))
        self.complete_state_dict(checkpoint["state_dict"])
        misfits = state_misfits(self.state_dict(), checkpoint["state_dict"])
        if misfits:
            raise CheckpointError("the checkpoint's weights do not fit the model this run's config builds: "
                                  + "; ".join(misfits[:5]) + (f" (and {len(misfits) - 5} more)" if len(misfits) > 5 else "")
                                  + ". Resume with the checkpoint's model settings"
                                  + (f" (differences: {'; '.join(changed[:8])})" if changed else ""))
        if (checkpoint.get("gan_ga") or {}).get("rng"):
            restore_rng_states(checkpoint["gan_ga"]["rng"])
        upgrade_data_position(checkpoint, self.trainer.datamodule if self._trainer is not None else None)
