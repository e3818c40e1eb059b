"""Model specs as the plain dicts a run saves, and models restored from a spec and state,
for either model family (SIGN-MLP, or a language model with a LoRA adapter)."""

from __future__ import annotations

import torch
from torch import nn

from grouping.models.lora_lm import LMSpec
from grouping.models.sign_mlp import ModelSpec

Spec = ModelSpec | LMSpec


def spec_to_dict(spec: Spec) -> dict:
    """Plain values that ``torch.load(weights_only=True)`` reads back."""
    return spec.as_dict()


def spec_from_dict(saved: dict) -> Spec:
    if saved.get("family") == "lora_lm":
        return LMSpec.from_dict(saved)
    return ModelSpec(saved["in_dim"], tuple(saved["hidden"]), saved["num_heads"],
                     saved["dropout"], saved.get("skip", False),
                     saved.get("skip_trainable", True))


def restore(spec: Spec, state: dict[str, torch.Tensor]) -> nn.Module:
    """The model of ``spec`` holding ``state`` (for a language model: its adapter)."""
    return spec.restore(state)
