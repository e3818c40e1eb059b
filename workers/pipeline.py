"""Stage orchestration used by the driver: each stage is a function of the config and the
previous stages' artifacts, cached in the run directory under a digest of its inputs."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

from grouping import run_files
from grouping.affinity.aggregate import affinity_from_losses
from grouping.affinity.computers import feature_dim
from grouping.affinity.error_stage import ErrorStage
from grouping.affinity.estimators import ESTIMATORS, BaseModel, gradient_projection_dim
from grouping.affinity.rows import RowTable
from grouping.affinity.subsets import sample_subsets, subset_count
from grouping.affinity.true_affinity import base_losses
from grouping.artifacts import RunDirectory, ShardStore
from grouping.clustering import (
    choose_num_groups,
    groups_to_labels,
    random_groups,
    sdp_groups,
    spectral_groups,
)
from grouping.config import ConfigError, RunConfig, dump_config
from grouping.dmtg import check_memory
from grouping.evaluation.comparison import Plan, comparison_row, summarize_rows
from grouping.evaluation.linear_baseline import per_task_linear
from grouping.evaluation.report import write_report
from grouping.evaluation.verdict import grouping_label, verdict
from grouping.families import TaskFamily, family_of
from grouping.models import ModelSpec, SignMLP, Spec, restore, spec_from_dict, spec_to_dict
from grouping.models.per_task_linear import PerTaskLinear
from grouping.resources import check_needs, estimation_needs
from grouping.tasksets import AnyTaskSet, build_taskset
from workers.console import say
from workers.dmtg import run_dmtg
from workers.estimates import compute_subset_losses, estimate_batch_size
from workers.gradients import compute_gradient_features
from workers.linear import fit_linear
from workers.stages import (
    BASE_SECTIONS,
    ESTIMATE_SECTIONS,
    STAGES,
    clusters_truth,
    estimates_by_gradients,
)
from workers.training import train_groups
from workers.true_affinity import fine_tune_subsets
from workers.tuning import GroupJob, train_group_trials


def linear_start(run: RunDirectory, config: RunConfig, family: TaskFamily) -> PerTaskLinear | None:
    """The per-task regressions every binary-label model of the run in ``run`` starts from
    (``model.skip_init: linear``; read from its linear stage), or None."""
    if not (family.binary_labels and config.model.linear_start):
        return None
    return PerTaskLinear(**run.load_arrays(run_files.LINEAR_MODEL))


class Pipeline:
    """One run: the task set, then the stages [linear: one logistic regression per task] →
    base → gradients → estimates (or true
    fine-tuning of every subset with ``affinity.method: true``) → affinity → [true affinity]
    → groups → [error report] → comparison → report, each skipped on ``--resume`` when
    already current."""

    def __init__(self, config: RunConfig, run: RunDirectory, resume: bool,
                 taskset: AnyTaskSet | None = None, taskset_seconds: float = 0.0) -> None:
        """``taskset``: the config's task set when the caller has built it already (in
        ``taskset_seconds``); otherwise :meth:`check` builds it."""
        self.config, self.run, self.resume = config, run, resume
        self.taskset, self.taskset_seconds = taskset, taskset_seconds
        self.checked = False
        self.summary: dict | None = None
        self.true_groups = clusters_truth(config)
        self.grouping = "gradtag" if estimates_by_gradients(config) else "true"

    @property
    def family(self) -> TaskFamily:
        """The task family of the run's task set (binary labels or instructions)."""
        return family_of(self.taskset)

    def _stage(self, name: str, sections: tuple[str, ...], files: list[str], compute) -> None:
        ran = self.run.run_stage(name, self.config.digest(*sections), files, compute, self.resume)
        outcome = self._outcome(name)
        if not ran:
            say(f"{name}: current, reused" + (f" ({outcome})" if outcome else ""))
        elif outcome:
            say(f"{name}: {outcome}")

    def _outcome(self, name: str) -> str | None:
        """The result of a finished stage in a few words, read from its files (None for
        stages whose progress bar says it all)."""
        if name == "groups":
            record = self.run.read_json(run_files.GROUPS)
            rule = "auto" if record["k_rule"].startswith("auto") else "given"
            text = f"k = {record['num_groups']} ({rule})"
            if record.get("ari_planted") is not None:
                text += f", adjusted Rand index {record['ari_planted']:.2f} against the planted"
                text += " families"
            return text
        if name == "error_report":
            report = self.run.read_json(run_files.ERROR_REPORT)
            if not np.isfinite(report["true_noise_floor"]):
                return ("the true figures do not vary within any task (every subset's model "
                        "kept the same state): nothing to rank")
            return (f"within-task Spearman of the estimate {report['within_task_spearman']:.2f} "
                    f"against a noise floor of {report['true_noise_floor']:.2f}")
        if name == "comparison":
            result = verdict(summarize_rows(self.run.read_json(run_files.COMPARISON)))
            random = result.versus("random")
            if random is None:
                return None
            return (f"{grouping_label(random.own['grouping'])} vs random groups {random.gain} "
                    f"{result.label}")
        return None

    def check(self, until: str | None = None) -> None:
        """Everything that can be checked before a stage runs (no Ray needed): build the task
        set (its files read and validated), the ``until`` stage, DMTG's memory and the
        estimation stages' memory and disk. Raises ConfigError; writes nothing."""
        if self.taskset is None:
            start = time.perf_counter()
            self.taskset = build_taskset(self.config)
            self.taskset_seconds = time.perf_counter() - start
        if until is not None and until not in [stage[0] for stage in self._stages()]:
            raise ConfigError(f"--until {until}: this config does not run that stage")
        if self.config.dmtg.enabled:
            self._check_dmtg_memory()
        estimator = ESTIMATORS[self.config.affinity.estimator]
        if self.grouping == "gradtag" and not estimator.applies_to(self.family):
            raise ConfigError(f"affinity.estimator: {estimator.name} needs binary labels; "
                              "this task set has none (use surrogate or first_order)")
        if self.grouping == "gradtag" and self.family.binary_labels:
            parameters = sum(param.numel() for param in SignMLP(self._model_spec()).parameters()
                             if param.requires_grad)
            check_needs(estimation_needs(self.config, self.taskset, parameters), self.run.path,
                        self.config.ray.worker_memory_gib, self.config.ray.num_workers)
        self.checked = True

    def execute(self, until: str | None = None) -> None:
        """Run every stage, or stop after the stage named ``until`` (no report then). The
        resolved config is written once :meth:`check` has passed."""
        if not self.checked:
            self.check(until)
        self.run.manifest["config_digest"] = self.config.digest()
        self.run.manifest["taskset_seconds"] = self.taskset_seconds
        self.run.record_config(dump_config(self.config))
        for name, sections, files, compute in self._stages():
            self._stage(name, sections, files, compute)
            if name == until:
                self.run.publish()
                return
        self.summary = write_report(self.run.path)
        self.run.publish()

    def _stages(self) -> list[tuple[str, tuple[str, ...], list[str], Callable[[], None]]]:
        """(name, config sections its inputs depend on, files it writes, its function) of
        every stage this config runs, in order (:data:`workers.stages.STAGES`)."""
        binary_labels = self.family.binary_labels
        return [(stage.name, stage.sections(self.config), list(stage.files(self.config)),
                 getattr(self, stage.method))
                for stage in STAGES if stage.runs(self.config, binary_labels)]

    def _linear(self) -> None:
        start = time.perf_counter()
        fit = fit_linear(self.taskset, self.config)
        seconds = time.perf_counter() - start
        self.run.save_arrays(run_files.LINEAR_MODEL, **fit.as_arrays())
        self.run.write_json(run_files.PER_TASK_LINEAR, per_task_linear(
            self.taskset, fit=fit, fit_seconds=seconds))

    def _linear_start(self) -> PerTaskLinear | None:
        return linear_start(self.run, self.config, self.family)

    def _base(self) -> None:
        (result,) = train_groups(self.taskset, [list(range(self.taskset.num_tasks))],
                                 self.config, "base model", self._linear_start())
        self.run.save_torch(run_files.BASE_MODEL, {"spec": spec_to_dict(result["spec"]),
                                              "state": result["state"]})
        self.run.write_json(run_files.BASE_METRICS, {key: result[key] for key in (
            "tasks", "best_epoch", "best_criterion", "seconds")})

    def _load_base(self) -> tuple[Spec, dict]:
        saved = self.run.load_torch(run_files.BASE_MODEL)
        return spec_from_dict(saved["spec"]), saved["state"]

    def _base_model(self) -> BaseModel:
        """θ0 with the task set, fine-tuning settings and seed, for estimators that train it,
        and the run's config and linear start, for estimators that train a group model."""
        spec, state = self._load_base()
        return BaseModel(self.taskset, spec, state, self.config.fine_tuning(), self.config.seed,
                         self.config, self._linear_start())

    def _gradients(self) -> None:
        options = self.config.affinity
        rows = self.family.rows(self.taskset, options.max_negatives, self.config.seed)
        spec, state = self._load_base()
        shards = self._shards("gradients", self.config.ray.chunk_rows)
        dim = gradient_projection_dim(options)
        shape = (len(rows), feature_dim(options.projection, dim))
        with self.run.array_writer(run_files.GRADIENT_FEATURES, shape, np.float32) as projected:
            f0 = compute_gradient_features(spec, state, self.taskset, rows.example, rows.task,
                                           options, self.config.seed, self.config.ray,
                                           projected, shards, dim)
        self.run.save_arrays(run_files.GRADIENT_ROWS, **rows.as_dict())
        self.run.save_array(run_files.GRADIENT_F0, f0)
        shards.clear()

    def _shards(self, stage: str, shard_size: int) -> ShardStore:
        """Where a stage keeps its finished shards until it completes: named by the digest
        of its inputs and the shard size, so only shards of the same work are reused."""
        digest = self.config.digest(*ESTIMATE_SECTIONS)
        return ShardStore(self.run, f"shards/{stage}-{digest}-{shard_size}")

    def _subsets(self) -> np.ndarray:
        """The sampled subsets of the affinity estimate, [m, s]."""
        options, num_tasks = self.config.affinity, self.taskset.num_tasks
        return sample_subsets(num_tasks, options.subset_size,
                              subset_count(options, num_tasks), self.config.seed)

    def _save_subset_losses(self, subsets: np.ndarray, losses: np.ndarray, column: str) -> None:
        self.run.save_arrays(run_files.SUBSET_LOSSES, subsets=subsets, losses=losses)
        lines = [f"subset,task,task_name,{column}"]
        for number, (subset, loss) in enumerate(zip(subsets, losses)):
            lines += [f"{number},{task},{self.taskset.task_names[task]},{value:.8g}"
                      for task, value in zip(subset, loss)]
        self.run.write_text(run_files.SUBSET_LOSSES_CSV, "\n".join(lines) + "\n")

    def _estimates(self) -> None:
        subsets = self._subsets()
        rows = RowTable(**self.run.load_arrays(run_files.GRADIENT_ROWS))
        shards = self._shards("estimates", estimate_batch_size(
            self.config.affinity, len(subsets), self.config.ray))
        losses = compute_subset_losses(
            subsets, rows, self.run.load_array(run_files.GRADIENT_F0),
            self.run.load_array(run_files.GRADIENT_FEATURES, mmap=True), self.config.affinity,
            self.config.ray, shards, self._base_model())
        self._save_subset_losses(subsets, losses, "estimated_loss")
        shards.clear()

    def _fine_tune(self, subsets: np.ndarray, seed: int, description: str) -> list[dict]:
        """True training of each subset (``true_affinity.protocol``). Each finished trial
        persists under a digest of what it depends on (base model, protocol and its training
        settings, the figure recorded), so an interrupted stage does not redo it and another
        stage needing the same trial reads it back."""
        spec, state = self._load_base()
        protocol, target = self.config.true_affinity.protocol, self.config.true_affinity.target
        if protocol == "from_scratch":
            options = self.config.group_training
            tuning = (self.config.digest(*BASE_SECTIONS), protocol, options.optimizers[0],
                      options.first_lr, target)
        else:
            tuning = (self.config.digest(*BASE_SECTIONS), self.config.true_affinity.epochs,
                      self.config.fine_tuning().model_dump_json(), target)
        digest = hashlib.sha256(repr(tuning).encode()).hexdigest()[:16]
        trials = (self.run, f"true_trials/{digest}")
        return fine_tune_subsets(self.taskset, spec, state, subsets, self.config, seed,
                                 description, trials, self._linear_start())

    def _true_subsets(self) -> None:
        subsets = self._subsets()
        results = self._fine_tune(subsets, self.config.seed, "true fine-tuning")
        self._save_subset_losses(subsets, np.stack([result["losses"] for result in results]),
                                 "true_loss")

    def _affinity(self) -> None:
        table = self.run.load_arrays(run_files.SUBSET_LOSSES)
        self.run.save_array(run_files.AFFINITY, affinity_from_losses(
            table["subsets"], table["losses"], self.taskset.num_tasks))

    def _true_losses(self) -> None:
        options = self.config.true_affinity
        table = self.run.load_arrays(run_files.SUBSET_LOSSES)
        num_subsets = len(table["subsets"])
        rng = np.random.default_rng(self.config.seed + 7)
        sample = np.sort(rng.choice(num_subsets, min(options.num_subsets, num_subsets),
                                    replace=False))
        tuned = np.arange(num_subsets) if options.all_subsets else sample
        subsets = table["subsets"][tuned]
        first = self._fine_tune(subsets, self.config.seed, "true training")
        losses = np.stack([result["losses"] for result in first])
        arrays = {"subset_index": tuned, "subsets": subsets, "losses": losses,
                  "seconds": np.array([result["seconds"] for result in first])}
        if options.repeat:
            second = self._fine_tune(table["subsets"][sample], self.config.seed + 1,
                                     "true training, second seed")
            repeat = np.full(losses.shape, np.nan)
            repeat[np.searchsorted(tuned, sample)] = [result["losses"] for result in second]
            arrays["losses_repeat"] = repeat
        spec, state = self._load_base()
        arrays["base_losses"] = base_losses(restore(spec, state), spec, self.taskset,
                                            torch.device("cpu"), options.target)
        self.run.save_arrays(run_files.TRUE_LOSSES, **arrays)
        if options.all_subsets:
            self.run.save_array(run_files.TRUE_AFFINITY, affinity_from_losses(
                subsets, losses, self.taskset.num_tasks))

    def _error_report(self) -> None:
        report = ErrorStage(self.run, self.taskset, self.config, *self._load_base(),
                            self._linear_start()).report()
        report["groups_ari"] = self.run.read_json(run_files.GROUPS).get("ari_estimated_vs_true")
        self.run.write_json(run_files.ERROR_REPORT, report)

    def _cluster(self, affinity: np.ndarray, num_groups: int) -> tuple[list[list[int]], float]:
        """Groups by the configured method, and the seconds it took."""
        options, seed = self.config.clustering, self.config.seed
        start = time.perf_counter()
        if options.method == "sdp":
            groups = sdp_groups(affinity, num_groups, options.solver, seed)
        else:
            groups = spectral_groups(affinity, num_groups, seed)
        return groups, time.perf_counter() - start

    def _groups(self) -> None:
        affinity = self.run.load_array(run_files.AFFINITY)
        options, seed, num_tasks = self.config.clustering, self.config.seed, self.taskset.num_tasks
        rule = "given"
        num_groups = options.num_groups
        if num_groups == "auto":
            num_groups = choose_num_groups(affinity, options.max_groups)
            rule = "auto: largest eigengap of the normalised Laplacian of max(T, 0)"
        chosen, seconds = self._cluster(affinity, num_groups)
        spectral = spectral_groups(affinity, num_groups, seed)
        record = {"method": options.method, "affinity": self.grouping, "num_groups": num_groups,
                  "k_rule": rule, "groups": chosen,
                  "group_names": [[self.taskset.task_names[t] for t in group]
                                  for group in chosen],
                  "spectral_groups": spectral, "clustering_seconds": seconds}
        if self.true_groups:
            true, true_seconds = self._cluster(self.run.load_array(run_files.TRUE_AFFINITY),
                                               num_groups)
            agreement = adjusted_rand_score(groups_to_labels(true, num_tasks),
                                            groups_to_labels(chosen, num_tasks))
            record.update(true_groups=true, true_clustering_seconds=true_seconds,
                          ari_estimated_vs_true=float(agreement))
        if self.taskset.families is not None:
            record["planted_families"] = self.taskset.families.tolist()
            for key, groups in (("ari_planted", chosen), ("ari_planted_spectral", spectral),
                                ("ari_planted_true", record.get("true_groups"))):
                if groups is not None:
                    record[key] = float(adjusted_rand_score(self.taskset.families,
                                                            groups_to_labels(groups, num_tasks)))
        self.run.write_json(run_files.GROUPS, record)

    def _model_spec(self) -> ModelSpec:
        return ModelSpec.from_config(self.config.model, self.taskset.features.shape[1],
                                     self.taskset.num_tasks)

    def _dmtg_branches(self, groups: int) -> int:
        return self.config.dmtg.num_groups or groups

    def _check_dmtg_memory(self) -> None:
        """Refuse before any stage runs when DMTG could not fit (at the largest k allowed)."""
        k = self.config.clustering.num_groups
        branches = self._dmtg_branches(self.config.clustering.max_groups if k == "auto" else k)
        try:
            check_memory(self.taskset, self._model_spec(), branches,
                         self.config.train.batch_size, self.config.dmtg.max_memory_gib)
        except ValueError as error:
            raise ConfigError(str(error)) from None

    def _dmtg(self) -> None:
        """DMTG once per initialisation seed of the comparison (its groups may differ)."""
        groups = self.run.read_json(run_files.GROUPS)["num_groups"]
        runs = run_dmtg(self.taskset, self._model_spec(), self._dmtg_branches(groups),
                        self.config, self._init_seeds(), self._linear_start())
        self.run.write_json(run_files.DMTG, {"runs": runs})

    def _init_seeds(self) -> list[int]:
        """The initialisation seeds every compared grouping is trained with."""
        return [self.config.seed + number for number in range(self.config.group_training.seeds)]

    def _plans(self, record: dict, dmtg_runs: list[dict]) -> list[Plan]:
        """Every grouping to train: all-in-one, the leading grouping, then the baselines, and
        DMTG's groups (one grouping per run of ``dmtg_runs``, trained with that run's seed)."""
        taskset, options = self.taskset, self.config.groups
        seconds = self.run.stage_seconds()
        search = sum(seconds.get(stage, 0.0) for stage in (
            "gradients", "estimates", "true_subsets", "affinity", "groups"))
        chosen = record["groups"]
        plans = [Plan("all", [list(range(taskset.num_tasks))]),
                 Plan(self.grouping, chosen, search)]
        if options.spectral:
            plans.append(Plan("spectral", record["spectral_groups"], search))
        if "true_groups" in record:
            plans.append(Plan("true", record["true_groups"],
                              seconds["true_affinity"] + record["true_clustering_seconds"]))
        sizes = [len(group) for group in chosen]
        plans += [Plan("random", random_groups(sizes, taskset.num_tasks, self.config.seed + seed),
                       seed=seed) for seed in range(options.random_seeds)]
        if options.single_task:
            plans.append(Plan("single", [[task] for task in range(taskset.num_tasks)]))
        # DMTG's groups of its number-th seed, trained as every other grouping is (fresh
        # group models, the same start, loop and seed), beside DMTG's own fine-tuning.
        plans += [Plan("dmtg_groups", [group for group in run["groups"] if group],
                       run["search_seconds"], seed=number)
                  for number, run in enumerate(dmtg_runs)]
        return plans

    def _tracks_dominance(self, group: list[int]) -> bool:
        """Whether a compared model of these tasks tracks task dominance
        (``group_training.dominance_max_tasks``)."""
        limit = self.config.group_training.dominance_max_tasks
        return limit is None or len(group) <= limit

    def _job_key(self, job: GroupJob) -> str:
        """Where a trained group model's result is kept: a digest of everything it depends on
        (task set, model, training, its tasks, optimizer, seed, learning rates), so a resumed
        comparison trains only the group models it does not hold yet."""
        options = self.config.group_training
        inputs = (self.config.digest(*BASE_SECTIONS), job, options.lrs_for(job.optimizer),
                  options.dominance_decay)
        return f"group_trials/{hashlib.sha256(repr(inputs).encode()).hexdigest()[:20]}.pt"

    def _train_jobs(self, jobs: list[GroupJob]) -> list[dict]:
        """Each job's result, read back where an earlier attempt kept it, trained otherwise."""
        keys = [self._job_key(job) for job in jobs]
        first: dict[str, int] = {}
        for number, key in enumerate(keys):
            first.setdefault(key, number)
        missing = [number for key, number in first.items() if not self.run.file(key).is_file()]
        if missing:
            name = hashlib.sha256(repr([keys[number] for number in missing]).encode())
            results = train_group_trials(self.taskset, [jobs[number] for number in missing],
                                         self.config, self.run.tune_storage(),
                                         f"groups-{name.hexdigest()[:16]}", "group models",
                                         self._linear_start())
            for number, result in zip(missing, results):
                self.run.save_torch(keys[number], result)
        return [self.run.load_torch(key) for key in keys]

    def _comparison(self) -> None:
        dmtg_runs = (self.run.read_json(run_files.DMTG)["runs"] if self.config.dmtg.enabled
                     else [])
        plans = self._plans(self.run.read_json(run_files.GROUPS), dmtg_runs)
        primary, *others = self.config.group_training.optimizers
        compared = {"all", self.grouping}
        seeds = self._init_seeds()

        def seeds_of(plan: Plan) -> list[int]:
            return seeds if plan.seed is None else [self.config.seed + plan.seed]

        runs = [(plan, primary, seed) for plan in plans for seed in seeds_of(plan)]
        runs += [(plan, other, seed) for other in others for plan in plans
                 if plan.name in compared for seed in seeds]
        jobs = [GroupJob(group, optimizer, plan.name in compared and self._tracks_dominance(group),
                         seed)
                for plan, optimizer, seed in runs for group in plan.groups]
        results = self._train_jobs(jobs)
        rows, per_task, position = [], {}, 0
        for plan, optimizer, seed in runs:
            mine = results[position:position + len(plan.groups)]
            position += len(plan.groups)
            rows.append(comparison_row(plan, mine, optimizer, seed, self.family.metric_names))
            key = plan.name if plan.seed is None else f"{plan.name}-seed{plan.seed}"
            key = key if optimizer == primary else f"{key}-{optimizer}"
            per_task[f"{key}-init{seed}"] = sorted(
                (task for result in mine for task in result["tasks"]),
                key=lambda task: task["task"])
            if plan.name == self.grouping and optimizer == primary and seed == seeds[0]:
                for number, result in enumerate(mine):
                    self.run.save_torch(f"{run_files.GROUP_MODELS}/group{number}.pt", {
                        "tasks": [task["task"] for task in result["tasks"]],
                        "optimizer": optimizer, "lr": result["lr"],
                        "spec": result["spec"], "state": result["state"]})
        if self.config.groups.per_task_linear and self.family.binary_labels:
            linear = self.run.read_json(run_files.PER_TASK_LINEAR)
            plan = Plan("per_task_linear", [[task] for task in range(self.taskset.num_tasks)])
            rows.append(comparison_row(plan, [linear], "lbfgs", None,
                                       self.family.metric_names))
            per_task["per_task_linear"] = linear["tasks"]
        for run in dmtg_runs:
            plan = Plan("dmtg", run["groups"], run["search_seconds"])
            rows.append(comparison_row(plan, [{"tasks": run["tasks"],
                                               "seconds": run["finetune_seconds"]}],
                                       "adam", run["seed"], self.family.metric_names))
            per_task[f"dmtg-init{run['seed']}"] = run["tasks"]
        self.run.write_json(run_files.COMPARISON, rows)
        self.run.write_json(run_files.TASK_METRICS, per_task)
