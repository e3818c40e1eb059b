"""Per-group training as Ray Tune trials: one trial per (group, optimizer, learning rate of
that optimizer),
with the config's resources per trial, retried on failure, stored in the run directory and
restored (finished trials kept) when an interrupted run is resumed."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from ray import tune
from tqdm import tqdm

from grouping.config import RunConfig
from grouping.families import family_of
from grouping.models import spec_to_dict
from grouping.models.per_task_linear import PerTaskLinear
from grouping.tasksets import AnyTaskSet
from grouping.training import resolve_device
from workers.console import bar_stream
from workers.runtime import worker_threads

RESULT_FILE = "result.pt"


@dataclass(frozen=True)
class GroupJob:
    """One group model to train: its tasks, the optimizer, whether to track the task
    dominance of its shared layers, and its initialisation seed (None: the config's)."""

    tasks: list[int]
    optimizer: str
    track_dominance: bool = False
    seed: int | None = None


def _trial(params: dict, taskset: AnyTaskSet, jobs: list[GroupJob], config: RunConfig,
           linear: PerTaskLinear | None) -> None:
    """Tune trainable: train one job at one learning rate; report the best validation loss
    with a checkpoint holding the trained model and its test metrics."""
    torch.set_num_threads(worker_threads(config.group_training.num_cpus_per_trial))
    job = jobs[params["trial"]["job"]]
    train = config.train.model_copy(update={"lr": params["trial"]["lr"]})
    result = family_of(taskset).train_group(taskset, job.tasks, config, train,
                                            resolve_device(config.device), job.optimizer,
                                            job.track_dominance, job.seed, linear)
    result["spec"] = spec_to_dict(result["spec"])
    with tempfile.TemporaryDirectory() as directory:
        torch.save(result, Path(directory) / RESULT_FILE)
        tune.report({"val_criterion": result["best_criterion"]},
                    checkpoint=tune.Checkpoint.from_directory(directory))


class _ProgressBar(tune.Callback):
    """A tqdm bar over finished trials (not pickled with Tune's experiment state)."""

    def __init__(self, total: int, description: str) -> None:
        self.total, self.description, self.bar = total, description, None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "bar": None}

    def _open(self) -> tqdm:
        if self.bar is None:
            self.bar = tqdm(total=self.total, desc=self.description, unit="trial",
                            file=bar_stream())
        return self.bar

    def setup(self, **info) -> None:
        self._open()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._open().update(1)

    def on_experiment_end(self, trials, **info) -> None:
        self._open().close()


def _read_result(result: tune.Result) -> dict:
    if result.error is not None:
        raise RuntimeError(f"group training trial failed: {result.error}")
    with result.checkpoint.as_directory() as directory:
        saved = torch.load(Path(directory) / RESULT_FILE, weights_only=True)
    saved["lr"] = result.config["trial"]["lr"]
    return saved


def train_group_trials(taskset: AnyTaskSet, jobs: list[GroupJob], config: RunConfig,
                       storage: str, name: str, description: str,
                       linear: PerTaskLinear | None = None) -> list[dict]:
    """For each job, the trial with the lowest validation criterion over the learning rates
    of its optimizer (``group_training.lrs``, a list or a mapping per optimizer)
    (its result dict, with the chosen ``lr``), in job order.

    The experiment lives in ``storage/name`` (a local path or a URI every node reaches); when
    it exists from an interrupted attempt it is restored, and trials that finished there are
    not run again. ``linear``: the per-task regressions models start from
    (``model.skip_init``).
    """
    options = config.group_training
    trainable = tune.with_resources(
        tune.with_parameters(_trial, taskset=taskset, jobs=jobs, config=config,
                             linear=linear),
        {"cpu": options.num_cpus_per_trial, "gpu": options.num_gpus_per_trial})
    path = f"{storage.rstrip('/')}/{name}"
    trials = [{"job": number, "lr": lr} for number, job in enumerate(jobs)
              for lr in options.lrs_for(job.optimizer)]
    total = len(trials)
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(trials)},
            tune_config=tune.TuneConfig(metric="val_criterion", mode="min", reuse_actors=True),
            run_config=tune.RunConfig(
                name=name, storage_path=storage, verbose=0,
                callbacks=[_ProgressBar(total, description)],
                failure_config=tune.FailureConfig(max_failures=config.ray.max_retries)))
    grid = tuner.fit()
    best: dict[int, dict] = {}
    for result in grid:
        saved = _read_result(result)
        job = result.config["trial"]["job"]
        if job not in best or saved["best_criterion"] < best[job]["best_criterion"]:
            best[job] = saved
    return [best[job] for job in range(len(jobs))]
