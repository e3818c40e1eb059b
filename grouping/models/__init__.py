"""Multitask models: a shared trunk and one logit head per task."""

from grouping.models.sign_mlp import ModelSpec, SignMLP, build_model, restore_model

__all__ = ["ModelSpec", "SignMLP", "build_model", "restore_model"]
