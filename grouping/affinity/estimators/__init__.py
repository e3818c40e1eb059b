"""Estimators of f̂(S, i) behind one interface (:class:`Estimator`), one module each; a new
estimator is one module here with a subclass, added to :data:`ESTIMATORS`."""

from __future__ import annotations

from grouping.affinity.estimators.base import (
    BaseModel,
    Estimator,
    EstimatorInputs,
    task_loss_gradients,
)
from grouping.affinity.estimators.calibrated_surrogate import CalibratedSurrogateEstimator
from grouping.affinity.estimators.first_order import FirstOrderEstimator
from grouping.affinity.estimators.label_overlap import LabelOverlapEstimator
from grouping.affinity.estimators.lookahead import LookaheadEstimator
from grouping.affinity.estimators.surrogate import SurrogateEstimator
from grouping.affinity.estimators.task_curves import TaskCurvesEstimator
from grouping.affinity.estimators.truncated import TruncatedEstimator
from grouping.config import AffinityConfig

ESTIMATORS: dict[str, type[Estimator]] = {
    estimator.name: estimator
    for estimator in (SurrogateEstimator, CalibratedSurrogateEstimator, FirstOrderEstimator,
                      LabelOverlapEstimator, LookaheadEstimator, TaskCurvesEstimator,
                      TruncatedEstimator)}


def make_estimator(options: AffinityConfig) -> Estimator:
    """The estimator ``affinity.estimator`` names, with its options."""
    return ESTIMATORS[options.estimator](options)


def gradient_projection_dim(options: AffinityConfig) -> int:
    """The projection dimension the gradients stage computes: ``affinity.projection_dim``,
    or 0 (base outputs only, no gradient) when the estimator reads no gradient features."""
    uses = ESTIMATORS[options.estimator].uses_gradient_features
    return options.projection_dim if uses else 0


__all__ = ["ESTIMATORS", "BaseModel", "Estimator", "EstimatorInputs", "gradient_projection_dim",
           "make_estimator", "task_loss_gradients"]
