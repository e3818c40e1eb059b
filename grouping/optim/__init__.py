"""AdaTask optimizers, per-task gradients and the task-dominance (AU) metric."""

from grouping.optim.adatask import (
    ADATASK_OPTIMIZERS,
    AdaTask,
    AdaTaskAdagrad,
    AdaTaskAdam,
    AdaTaskAdamMean,
    AdaTaskRMSprop,
)
from grouping.optim.dominance import AdamTaskSplit, DominanceTracker
from grouping.optim.task_gradients import TaskGradientMethod, task_gradients

__all__ = ["ADATASK_OPTIMIZERS", "AdaTask", "AdaTaskAdagrad", "AdaTaskAdam", "AdaTaskAdamMean",
           "AdaTaskRMSprop",
           "AdamTaskSplit", "DominanceTracker", "TaskGradientMethod", "task_gradients"]
