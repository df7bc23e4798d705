"""The text-conditional VAE-GAN (``model=vaegan``): Larsen et al. 2016, conditioned like CVAE-GAN.

An image encoder E maps a real image x and its caption c to q(z | x, c) = N(mu, sigma^2). The
generator (any fusion, unchanged) decodes (z, c): from a posterior sample z = mu + eps * sigma it
*reconstructs* x, from the prior N(0, I) it *samples*, as every GAN preset does. Per batch
(``training_step``):
  1. encode     captions -> TextFeatures (TextToImageGAN's ``text_and_negatives`` / ``pairs``)
  2. VAE phase  E(x, c) -> z -> x_rec = G(z, c); E and G step on
                  KL weight (linear warm-up over ``kl_warmup_batches``) * KL(q || N(0, I))
                + ``recon_weight`` * |x - x_rec|_1 (pixels)
                + ``feature_match_weight`` * ||D.features(x) - D.features(x_rec)||^2
                + ``recon_adversarial_weight`` * G's adversarial loss on (x_rec, c)
  3. D phase    TextToImageGAN's ``discriminator_step``: (real, caption) vs fakes and (real, another
                caption), MA-GP on the real pairs; the fakes are prior samples of which the first
                ``recon_fake_fraction`` of the batch are replaced by the reconstructions
  4. G phase    TextToImageGAN's ``generator_step``: prior samples judged by D
  5. EMA        of G only. Sampling, metrics, ``generate.py``, ``evaluate.py``, ``export.py`` and
                the demo use the EMA generator on prior noise, exactly as for the GANs.

E's optimizer: E is a second param group of G's optimizer (same learning rate and betas). That is
the simplest choice that keeps exact resume: Lightning saves and restores that optimizer's state,
groups included, with nothing added; a scheduler on G drives E too, and the ``ddp_gan`` strategy
averages every gradient a step has. The VAE phase is a step of that optimizer taken through the
update guard with ``counted=False`` (as the lazy MA-GP is): the divergence guard, clipping and the
precision plugin apply (a skipped VAE update counts in ``train/skipped_g``), and ``global_step``
stays ``n_critic + 1`` per batch, so ``trainer.max_steps`` means the same batches as for the GANs.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from gan_ga_utils.checks import Problems, check
from lightning_modules.components.text_encoders import TextFeatures
from lightning_modules.losses import RELATIVISTIC, generator_loss
from lightning_modules.sampling import Noise
from lightning_modules.text_to_image_gan import TextToImageGAN


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, I))`` summed over the latent dimensions, averaged over the
    batch (the prior term; 0 when the posterior is the prior)."""
    kl = 0.5 * (mu.float().pow(2) + logvar.float().exp() - 1.0 - logvar.float())
    return kl.sum(1).mean()


def feature_matching_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of D's feature maps of reconstructions and of their real images
    (Larsen et al.'s Gaussian likelihood in D's feature space); the real features are a target."""
    return F.mse_loss(fake.float(), real.detach().float())


def kl_warmup(batches: int, weight: float, warmup_batches: int) -> float:
    """The KL weight after ``batches`` batches: linear from 0 to ``weight`` over ``warmup_batches``
    (0: ``weight`` from the first batch)."""
    return weight if warmup_batches <= 0 else weight * min(1.0, batches / warmup_batches)


def optimizer_with(build: Callable[..., torch.optim.Optimizer], extra: nn.Module,
                   params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """``build(params=params)`` with ``extra``'s parameters as a second param group (the same
    hyper-parameters). Bound with ``functools.partial``, which pickles (``ddp_spawn``), unlike a lambda."""
    return build(params=[{"params": list(params)}, {"params": list(extra.parameters())}])


class VAEGAN(TextToImageGAN):
    """TextToImageGAN plus an image encoder E and a VAE phase (see the module docstring).

    E trains with G's optimizer, as its second param group, not with a third optimizer: the
    simplest choice that keeps exact resume (Lightning saves and restores that optimizer's state,
    both groups, with nothing added), and G's scheduler, clipping and divergence guard cover E.

    Args (besides TextToImageGAN's, passed on as they are):
        image_encoder: a callable (Hydra partial) building the encoder from ``image_size``, ``z_dim``
            and ``text_dim`` (``components/image_encoders.py``).
        kl_weight: weight of KL(q(z | x, c) || N(0, I)), summed over z's dimensions.
        kl_warmup_batches: batches over which the KL weight rises linearly from 0 (0: no warm-up).
        recon_weight: weight of the pixel L1 between real images and their reconstructions.
        feature_match_weight: weight of the squared distance of D's 4x4 feature maps of real images
            and their reconstructions (one augmentation shared by both).
        recon_adversarial_weight: weight of G's adversarial loss on the reconstructions (Larsen's
            decoder loss; 0: reconstructions are pulled to the data by L1 and feature matching only).
        recon_fake_fraction: share of D's fakes that are reconstructions (the rest prior samples);
            0: D sees prior samples only.
    """

    def __init__(self, *, image_encoder: Callable[..., nn.Module], kl_weight: float = 0.01,
                 kl_warmup_batches: int = 200, recon_weight: float = 5.0, feature_match_weight: float = 1.0,
                 recon_adversarial_weight: float = 1.0, recon_fake_fraction: float = 0.5, **gan: Any):
        check(type(self), {k: v for k, v in locals().items() if k not in ("self", "__class__", "gan")}, "model")
        super().__init__(**gan)
        self.image_encoder = image_encoder(image_size=self.generator.image_size, z_dim=self.z_dim,
                                           text_dim=self.encoder.out_dim)
        self.kl_weight, self.kl_warmup_batches = kl_weight, kl_warmup_batches
        self.recon_weight, self.feature_match_weight = recon_weight, feature_match_weight
        self.recon_adversarial_weight, self.recon_fake_fraction = recon_adversarial_weight, recon_fake_fraction
        # E trains with G's optimizer (see the module docstring): TextToImageGAN.configure_optimizers
        # builds it from this callable
        self.optimizer_g = functools.partial(optimizer_with, self.optimizer_g, self.image_encoder)

    @classmethod
    def config_problems(cls, values, key: str = "model") -> list[str]:
        """TextToImageGAN's problems and the VAE's (see ``gan_ga_utils/checks.py``)."""
        p = Problems(values, key)
        p += super().config_problems(values, key)
        for name in ("kl_weight", "recon_weight", "feature_match_weight", "recon_adversarial_weight"):
            p.number(name, 0)
        p.number("kl_warmup_batches", 0, integer=True)
        p.number("recon_fake_fraction", 0, 1)
        return p

    # ------------------------------------------------------------------ the step, in reading order
    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        inputs = self.batch_inputs(batch)
        images, text = inputs.images, inputs.text
        with self.toggled_optimizer(opt_g):  # VAE phase: E and G reconstruct the batch
            vae_logs, vae_ok, recon = self.vae_step(images, text, opt_g)
        fake = self.fast("generator")(self.noise(len(text), Noise.G), text) if self.reuse_fake else None

        def fakes(critic: int) -> torch.Tensor:  # D phase: prior samples and reconstructions are fakes
            return self.d_fakes(self.prior_sample(text, critic) if fake is None else fake.detach(), recon)

        d_logs, d_ok = self.discriminator_phase(inputs, opt_d, fakes)
        with self.toggled_optimizer(opt_g):  # G phase: prior samples through D
            g_logs, g_ok = self.generator_step(inputs, opt_g, fake)
        self.end_batch(d_logs, {**vae_logs, **g_logs}, d_ok, g_ok & vae_ok, images.shape[0])

    def vae_step(self, images: torch.Tensor, text: TextFeatures, optimizer) -> tuple[dict, torch.Tensor, torch.Tensor]:
        """The VAE losses, one uncounted step of G's optimizer (E and G); returns (logs, stepped,
        the reconstructions, detached, for D)."""
        terms, recon = self.vae_losses(images, text)
        norm, ok = self.guard.step(optimizer, terms["loss"], counted=False)
        logs = {f"vae_{k}": v.detach() for k, v in terms.items()}
        logs.update(vae_grad_norm=norm, vae_kl_weight=self.current_kl_weight())
        return logs, ok, recon.detach()

    def vae_losses(self, images: torch.Tensor, text: TextFeatures) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The terms of the VAE phase (``loss`` their weighted sum) and the reconstructions. E, G and D
        read the caption detached: a trainable text encoder learns in the G phase, as for the GANs
        (its graph is back-propagated once per batch). D's weights do not train here (its optimizer
        is toggled off)."""
        text = text.detach()
        mu, logvar = self.fast("image_encoder")(images, text.pooled)
        z = mu + (0.5 * logvar).exp() * self.noise(len(text), Noise.VAE).to(mu.dtype)
        recon = self.fast("generator")(z, text)
        with torch.no_grad():
            real_d = self.fast("d_features")(self.d_input(images, Noise.AUG_RECON))
            real_features = real_d.map
        features = self.fast("d_features")(self.d_input(recon, Noise.AUG_RECON))  # the same augmentation
        terms = {"kl": gaussian_kl(mu, logvar), "l1": (recon.float() - images.float()).abs().mean(),
                 "feature_match": feature_matching_loss(features.map, real_features)}
        weights = {"kl": self.current_kl_weight(), "l1": self.recon_weight, "feature_match": self.feature_match_weight}
        if self.recon_adversarial_weight > 0:
            logits = self.fast("d_judge")(features, text.pooled, text.tokens, text.mask)[0]
            real = None
            if self.loss_kind == RELATIVISTIC:  # each reconstruction against its real image
                with torch.no_grad():
                    real = self.fast("d_judge")(real_d, text.pooled, text.tokens, text.mask)[0]
            terms["adversarial"] = generator_loss(self.loss_kind, logits, real)
            weights["adversarial"] = self.recon_adversarial_weight
        terms["loss"] = sum(weight * terms[name] for name, weight in weights.items())
        return terms, recon

    def current_kl_weight(self) -> float:
        return kl_warmup(self._batches, self.kl_weight, self.kl_warmup_batches)

    def prior_sample(self, text: TextFeatures, critic: int) -> torch.Tensor:
        """A D step's prior samples (TextToImageGAN's, when it is not given its fakes)."""
        with torch.no_grad():
            return self.fast("generator")(self.noise(len(text), Noise.D, critic), text)

    def d_fakes(self, prior: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        """D's fakes: the first ``round(recon_fake_fraction * B)`` rows reconstructions, the rest prior
        samples (each made from its own row's caption, so D judges it against that caption)."""
        k = round(self.recon_fake_fraction * prior.shape[0])
        return torch.cat([recon[:k].to(prior.dtype), prior[k:]]) if k else prior

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        if self.channels_last:
            self.image_encoder.to(memory_format=torch.channels_last)
        super().setup(stage)

    def _network_calls(self) -> dict[str, Callable]:
        """TextToImageGAN's network calls and the image encoder (what ``model.compile`` compiles)."""
        return {**super()._network_calls(), "image_encoder": self.image_encoder}
