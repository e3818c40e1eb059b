"""Task sets made by the user's own function, named in the config as "package.module:function"
and called as ``function(seed, **params)``."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

import numpy as np

from grouping.config import ConfigError, PythonTaskSetConfig
from grouping.tasksets.base import TEST, TRAIN, VAL, TaskSet


def resolve_builder(spec: str) -> Callable[..., TaskSet]:
    """Import ``module`` and return its callable ``function`` from ``"module:function"``; a
    module that cannot be imported for any reason (absent, or failing in its own code) is
    reported as a config error naming ``taskset.builder``."""
    module_name, _, function_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise ConfigError(f"taskset.builder: cannot import {module_name!r} "
                          f"({type(error).__name__}: {error})") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ConfigError(f"taskset.builder: module {module_name!r} has no function "
                          f"{function_name!r}")
    return function


def check_returned(taskset: object, config: PythonTaskSetConfig) -> TaskSet:
    """The builder's result if it is a usable TaskSet of the declared size, else ConfigError."""
    spec = config.builder
    if not isinstance(taskset, TaskSet):
        raise ConfigError(f"taskset.builder: {spec} returned {type(taskset).__name__}, not a "
                          "grouping.tasksets.TaskSet")
    if taskset.num_tasks != config.num_tasks:
        raise ConfigError(f"taskset.num_tasks: the config declares {config.num_tasks} tasks, "
                          f"{spec} returned {taskset.num_tasks}")
    features, labels, split = taskset.features, taskset.labels, taskset.split
    if features.dtype != np.float32 or features.ndim != 2 or not np.isfinite(features).all():
        raise ConfigError(f"taskset.builder: {spec} must return finite float32 [n, F] "
                          f"features, found {features.dtype} of shape {features.shape}")
    if labels.dtype != np.uint8 or labels.max(initial=0) > 1:
        raise ConfigError(f"taskset.builder: {spec} must return uint8 0/1 labels")
    if not np.isin(split, (TRAIN, VAL, TEST)).all() or not (
            (split == TRAIN).any() and (split == VAL).any()):
        raise ConfigError(f"taskset.builder: {spec} must return a split of TRAIN, VAL and "
                          "TEST with training and validation examples")
    return taskset


def build_custom(config: PythonTaskSetConfig, seed: int) -> TaskSet:
    """Call the configured builder with the run seed and ``params``; check what it returns."""
    builder = resolve_builder(config.builder)
    try:
        inspect.signature(builder).bind(seed, **config.params)
    except TypeError as error:
        raise ConfigError(f"taskset.params: {config.builder} cannot take the seed and these "
                          f"params ({error})") from None
    try:
        taskset = builder(seed, **config.params)
    except Exception as error:
        detail = " ".join(f"{type(error).__name__}: {error}".split())
        raise ConfigError(f"taskset.builder: {config.builder} raised {detail}") from None
    return check_returned(taskset, config)
