"""Model specs as the plain dicts a run saves, and models restored from a spec and state,
for either model family (SIGN-MLP, or a language model with a LoRA adapter)."""

from __future__ import annotations

from dataclasses import asdict

import torch
from torch import nn

from grouping.models.lora_lm import LMSpec, restore_lm
from grouping.models.sign_mlp import ModelSpec, restore_model

Spec = ModelSpec | LMSpec


def spec_to_dict(spec: Spec) -> dict:
    """Plain values that ``torch.load(weights_only=True)`` reads back."""
    return spec.as_dict() if isinstance(spec, LMSpec) else asdict(spec)


def spec_from_dict(saved: dict) -> Spec:
    if saved.get("family") == "lora_lm":
        return LMSpec.from_dict(saved)
    return ModelSpec(saved["in_dim"], tuple(saved["hidden"]), saved["num_heads"],
                     saved["dropout"], saved.get("skip", False),
                     saved.get("skip_trainable", True))


def restore(spec: Spec, state: dict[str, torch.Tensor]) -> nn.Module:
    """The model of ``spec`` holding ``state`` (for a language model: its adapter)."""
    if isinstance(spec, LMSpec):
        return restore_lm(spec, state)
    return restore_model(spec, state)
