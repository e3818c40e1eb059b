"""A language model fine-tuned through LoRA adapters only (Hu et al., "LoRA: Low-Rank
Adaptation of Large Language Models", ICLR 2022), with PEFT.

The backbone is a Hugging Face causal LM or encoder-decoder read from a local folder, or a
small Llama-style model built from the config with a fixed seed; it stays frozen. Every model
of a run (the all-task base θ0, each group's model, true fine-tuning) is that backbone plus
one adapter, and the adapter's parameters are the only state saved or shipped.

transformers and PEFT are imported where a model is built, so that graph and table runs do
not pay for importing them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from grouping.config import LanguageModelConfig
from grouping.models.char_tokenizer import CharTokenizer

BACKBONE_SEED = 12345


@dataclass(frozen=True)
class LMSpec:
    """Everything needed to rebuild the model on another worker (with an adapter state).

    Plain values only, so that ``asdict`` round-trips through ``torch.load(weights_only)``.
    """

    name_or_path: str | None
    seq2seq: bool
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    tokenizer: str
    lora_r: int
    lora_alpha: float
    lora_dropout: float
    target_modules: tuple[str, ...]
    answer_logodds: str
    max_length: int
    family: str = "lora_lm"

    @classmethod
    def from_config(cls, config: LanguageModelConfig) -> LMSpec:
        shape = config.architecture
        return cls(None if config.name_or_path is None else str(config.name_or_path),
                   config.seq2seq, shape.hidden_size, shape.intermediate_size,
                   shape.num_layers, shape.num_heads, config.tokenizer, config.lora.r,
                   config.lora.alpha, config.lora.dropout, tuple(config.lora.target_modules),
                   config.answer_logodds, config.max_length)

    @classmethod
    def from_dict(cls, saved: dict) -> LMSpec:
        return cls(**{**saved, "target_modules": tuple(saved["target_modules"])})

    def as_dict(self) -> dict:
        """Plain values that ``torch.load(weights_only=True)`` reads back."""
        return {**asdict(self), "target_modules": list(self.target_modules)}

    def restore(self, state: dict[str, torch.Tensor]) -> nn.Module:
        """The backbone of this spec with the saved adapter ``state``."""
        return restore_lm(self, state)


class TextTokenizer:
    """The ids a model reads: the built-in character tokenizer or the model's own."""

    def __init__(self, spec: LMSpec) -> None:
        if spec.tokenizer == "char":
            chars = CharTokenizer()
            self.encode, self.vocab_size = chars.encode, chars.vocab_size
            self.pad_id, self.bos_id, self.eos_id = chars.pad_id, chars.bos_id, chars.eos_id
            return
        from transformers import AutoTokenizer

        loaded = AutoTokenizer.from_pretrained(spec.name_or_path, local_files_only=True)
        self.encode = lambda text: loaded(text, add_special_tokens=False)["input_ids"]
        self.vocab_size = len(loaded)
        self.eos_id = loaded.eos_token_id
        self.bos_id = loaded.bos_token_id
        self.pad_id = loaded.pad_token_id if loaded.pad_token_id is not None else self.eos_id


def _backbone(spec: LMSpec, vocab_size: int) -> nn.Module:
    """The frozen model. Eager attention: the fused kernels' mask code branches on tensor
    values, which per-example gradients under torch.func.vmap cannot trace."""
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        LlamaConfig,
        LlamaForCausalLM,
    )

    if spec.name_or_path is not None:
        loader = AutoModelForSeq2SeqLM if spec.seq2seq else AutoModelForCausalLM
        return loader.from_pretrained(spec.name_or_path, local_files_only=True,
                                      attn_implementation="eager")
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=spec.hidden_size,
                         intermediate_size=spec.intermediate_size,
                         num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
                         num_key_value_heads=spec.num_heads,
                         max_position_embeddings=spec.max_length, tie_word_embeddings=False)
    config._attn_implementation = "eager"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(BACKBONE_SEED)
        return LlamaForCausalLM(config)


def build_lm(spec: LMSpec, seed: int) -> nn.Module:
    """The frozen backbone with a fresh LoRA adapter (initialised from ``seed``)."""
    from peft import LoraConfig, get_peft_model

    backbone = _backbone(spec, TextTokenizer(spec).vocab_size)
    lora = LoraConfig(r=spec.lora_r, lora_alpha=spec.lora_alpha,
                      lora_dropout=spec.lora_dropout, target_modules=list(spec.target_modules))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = get_peft_model(backbone, lora)
    model.config.use_cache = False
    return model


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable (LoRA) parameters, detached CPU copies."""
    return {name: param.detach().cpu().clone() for name, param in model.named_parameters()
            if param.requires_grad}


def load_adapter(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Copy an adapter state into ``model``'s LoRA parameters (all of them must be given)."""
    params = dict(model.named_parameters())
    missing = [name for name, param in params.items() if param.requires_grad and name not in state]
    if missing:
        raise KeyError(f"adapter state lacks {missing[0]}")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)
    return model


def restore_lm(spec: LMSpec, state: dict[str, torch.Tensor]) -> nn.Module:
    """The backbone with the saved adapter."""
    return load_adapter(build_lm(spec, 0), state)
