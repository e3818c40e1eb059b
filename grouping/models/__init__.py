"""Multitask models: SIGN-MLP (a shared trunk and one logit head per task) and language models
fine-tuned through LoRA adapters."""

from grouping.models.saved import Spec, restore, spec_from_dict, spec_to_dict
from grouping.models.sign_mlp import ModelSpec, SignMLP, build_model, restore_model

__all__ = ["ModelSpec", "SignMLP", "Spec", "build_model", "restore", "restore_model",
           "spec_from_dict", "spec_to_dict"]
