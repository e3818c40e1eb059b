"""Stage orchestration used by the driver: each stage is a function of the config and the
previous stages' artifacts, cached in the run directory under a digest of its inputs."""

from __future__ import annotations

import time

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score
from torch import nn

from grouping.affinity.aggregate import affinity_from_losses
from grouping.affinity.projection import dense_projection
from grouping.affinity.rows import RowTable, build_rows
from grouping.affinity.subsets import sample_subsets, subsets_for_coverage
from grouping.affinity.true_affinity import fine_tune, linearization_error, validation_losses
from grouping.artifacts import RunDirectory
from grouping.clustering import choose_num_groups, random_groups, sdp_groups, spectral_groups
from grouping.config import RunConfig, dump_config
from grouping.evaluation.comparison import comparison_row
from grouping.evaluation.error_report import error_report
from grouping.evaluation.report import write_report
from grouping.models import ModelSpec, restore_model
from grouping.tasksets import VAL, TaskSet, build_taskset
from workers.gradients import compute_gradient_features
from workers.surrogates import compute_subset_losses
from workers.training import train_groups
from workers.true_affinity import fine_tune_subsets

BASE_SECTIONS = ("seed", "taskset", "features", "model", "train")
ESTIMATE_SECTIONS = (*BASE_SECTIONS, "affinity")
TRUE_SECTIONS = (*ESTIMATE_SECTIONS, "true_affinity")
GROUP_SECTIONS = (*ESTIMATE_SECTIONS, "clustering")
COMPARE_SECTIONS = (*GROUP_SECTIONS, "groups")


def _labels_of(groups: list[list[int]], num_tasks: int) -> np.ndarray:
    labels = np.zeros(num_tasks, np.int64)
    for number, group in enumerate(groups):
        labels[group] = number
    return labels


class Pipeline:
    """One run: the task set, then the stages base → gradients → surrogates → affinity →
    groups → comparison → report, each skipped on ``--resume`` when already current."""

    def __init__(self, config: RunConfig, run: RunDirectory, resume: bool) -> None:
        self.config, self.run, self.resume = config, run, resume
        self.taskset: TaskSet | None = None

    def _stage(self, name: str, sections: tuple[str, ...], files: list[str], compute) -> None:
        ran = self.run.run_stage(name, self.config.digest(*sections), files, compute, self.resume)
        print(f"[{name}] {'done' if ran else 'current, reused'}", flush=True)

    def execute(self) -> None:
        self.run.write_text("config.yaml", dump_config(self.config))
        self.run.manifest["config_digest"] = self.config.digest()
        start = time.perf_counter()
        self.taskset = build_taskset(self.config)
        self.run.manifest["taskset_seconds"] = time.perf_counter() - start
        self._stage("base", BASE_SECTIONS, ["base_model.pt", "base_metrics.json"], self._base)
        self._stage("gradients", ESTIMATE_SECTIONS,
                    ["gradients/rows.npz", "gradients/f0.npy", "gradients/features.npy"],
                    self._gradients)
        self._stage("surrogates", ESTIMATE_SECTIONS, ["subset_losses.npz", "subset_losses.csv"],
                    self._surrogates)
        self._stage("affinity", ESTIMATE_SECTIONS, ["affinity.npy"], self._affinity)
        if self.config.true_affinity.enabled:
            self._stage("true_affinity", TRUE_SECTIONS, ["true_losses.npz"], self._true_losses)
            self._stage("error_report", TRUE_SECTIONS, ["error_report.json"], self._error_report)
        self._stage("groups", GROUP_SECTIONS, ["groups.json"], self._groups)
        self._stage("comparison", COMPARE_SECTIONS, ["comparison.json", "task_metrics.json"],
                    self._comparison)
        write_report(self.run.path)

    def _base(self) -> None:
        (result,) = train_groups(self.taskset, [list(range(self.taskset.num_tasks))],
                                 self.config, "base model")
        self.run.save_torch("base_model.pt", {"spec": result["spec"].__dict__,
                                              "state": result["state"]})
        self.run.write_json("base_metrics.json", {key: result[key] for key in (
            "tasks", "best_epoch", "best_val_loss", "seconds")})

    def _base_model(self) -> nn.Module:
        return restore_model(*self._load_base())

    def _load_base(self) -> tuple[ModelSpec, dict]:
        saved = self.run.load_torch("base_model.pt")
        spec = saved["spec"]
        return ModelSpec(spec["in_dim"], tuple(spec["hidden"]), spec["num_heads"],
                         spec["dropout"]), saved["state"]

    def _gradients(self) -> None:
        options = self.config.affinity
        rows = build_rows(self.taskset, options.max_negatives, self.config.seed)
        spec, state = self._load_base()
        f0, projected = compute_gradient_features(
            spec, state, self.taskset.features, rows.example, rows.task,
            options.projection_dim, self.config.seed, self.config.ray)
        self.run.save_arrays("gradients/rows.npz", **rows.as_dict())
        self.run.save_array("gradients/f0.npy", f0)
        self.run.save_array("gradients/features.npy", projected)

    def _surrogates(self) -> None:
        options, num_tasks = self.config.affinity, self.taskset.num_tasks
        count = options.num_subsets or subsets_for_coverage(
            num_tasks, options.subset_size, options.coverage)
        subsets = sample_subsets(num_tasks, options.subset_size, count, self.config.seed)
        rows = RowTable(**self.run.load_arrays("gradients/rows.npz"))
        losses = compute_subset_losses(
            subsets, rows, self.run.load_array("gradients/f0.npy"),
            self.run.load_array("gradients/features.npy", mmap=True), options, self.config.ray)
        self.run.save_arrays("subset_losses.npz", subsets=subsets, losses=losses)
        lines = ["subset,task,task_name,estimated_loss"]
        for number, (subset, loss) in enumerate(zip(subsets, losses)):
            lines += [f"{number},{task},{self.taskset.task_names[task]},{value:.8g}"
                      for task, value in zip(subset, loss)]
        self.run.write_text("subset_losses.csv", "\n".join(lines) + "\n")

    def _affinity(self) -> None:
        table = self.run.load_arrays("subset_losses.npz")
        self.run.save_array("affinity.npy", affinity_from_losses(
            table["subsets"], table["losses"], self.taskset.num_tasks))

    def _true_losses(self) -> None:
        options = self.config.true_affinity
        table = self.run.load_arrays("subset_losses.npz")
        rng = np.random.default_rng(self.config.seed + 7)
        count = min(options.num_subsets, len(table["subsets"]))
        chosen = np.sort(rng.choice(len(table["subsets"]), count, replace=False))
        subsets = table["subsets"][chosen]
        spec, state = self._load_base()
        trials = self.run.file(f"true_trials/{self.config.digest(*TRUE_SECTIONS)}")
        first = fine_tune_subsets(self.taskset, spec, state, subsets, self.config,
                                  self.config.seed, "true fine-tuning", trials)
        arrays = {"subset_index": chosen, "subsets": subsets,
                  "losses": np.stack([result["losses"] for result in first]),
                  "seconds": np.array([result["seconds"] for result in first])}
        if options.repeat:
            second = fine_tune_subsets(self.taskset, spec, state, subsets, self.config,
                                       self.config.seed + 1, "true fine-tuning, second seed",
                                       trials)
            arrays["losses_repeat"] = np.stack([result["losses"] for result in second])
        arrays["base_losses"] = validation_losses(self._base_model(), self.taskset,
                                                  np.arange(self.taskset.num_tasks),
                                                  torch.device("cpu"))
        self.run.save_arrays("true_losses.npz", **arrays)

    def _error_report(self) -> None:
        true = self.run.load_arrays("true_losses.npz")
        estimated = self.run.load_arrays("subset_losses.npz")
        tasks = true["subsets"].ravel()
        has_positive = self.taskset.labels[self.taskset.indices(VAL)].sum(0) > 0
        keep = has_positive[tasks]
        estimate = estimated["losses"][true["subset_index"]].ravel()
        repeat = true["losses_repeat"].ravel()[keep] if "losses_repeat" in true else None
        report = error_report(estimate[keep], true["losses"].ravel()[keep],
                              true["base_losses"][tasks][keep], tasks[keep], repeat)
        seconds = self.run.stage_seconds()
        report["estimate_seconds"] = seconds["gradients"] + seconds["surrogates"]
        report["estimate_seconds_with_base"] = report["estimate_seconds"] + seconds["base"]
        report["true_seconds_per_subset"] = float(np.median(true["seconds"]))
        report["true_seconds_extrapolated"] = (report["true_seconds_per_subset"]
                                               * len(estimated["subsets"]))
        report["cost_ratio"] = report["estimate_seconds"] / report["true_seconds_extrapolated"]
        report["linearization_error"] = self._linearization(true["subsets"][:3])
        report["tasks_without_validation_positive"] = np.flatnonzero(~has_positive).tolist()
        report["fine_tuning"] = self.config.true_affinity.model_dump()
        self.run.write_json("error_report.json", report)

    def _linearization(self, subsets: np.ndarray) -> list[float]:
        """Linearised vs really fine-tuned logits on the validation rows of a few subsets."""
        base = self._base_model()
        rows = RowTable(**self.run.load_arrays("gradients/rows.npz"))
        f0 = self.run.load_array("gradients/f0.npy")
        gradients = self.run.load_array("gradients/features.npy", mmap=True)
        shapes = {name: param.shape for name, param in base.named_parameters()}
        projection = dense_projection(shapes, self.config.affinity.projection_dim,
                                      self.config.seed)
        errors = []
        for subset in subsets:
            tuned = fine_tune(base, self.taskset, subset, self.config.fine_tuning(),
                              self.config.true_affinity.epochs, self.config.seed,
                              torch.device("cpu"))
            index = rows.rows_of(subset, 1)
            inputs = torch.tensor(self.taskset.features[rows.example[index]])
            errors.append(linearization_error(base, tuned, projection, inputs,
                                              torch.tensor(rows.task[index]),
                                              f0[index].astype(np.float64), gradients[index]))
        return errors

    def _groups(self) -> None:
        affinity = self.run.load_array("affinity.npy")
        options, seed = self.config.clustering, self.config.seed
        rule = "given"
        num_groups = options.num_groups
        if num_groups == "auto":
            num_groups = choose_num_groups(affinity, options.max_groups)
            rule = "auto: largest eigengap of the normalised Laplacian of max(T, 0)"
        start = time.perf_counter()
        if options.method == "sdp":
            chosen = sdp_groups(affinity, num_groups, options.solver, seed)
        else:
            chosen = spectral_groups(affinity, num_groups, seed)
        seconds = time.perf_counter() - start
        spectral = spectral_groups(affinity, num_groups, seed)
        record = {"method": options.method, "num_groups": num_groups, "k_rule": rule,
                  "groups": chosen, "group_names": [[self.taskset.task_names[t] for t in group]
                                                    for group in chosen],
                  "spectral_groups": spectral, "clustering_seconds": seconds}
        if self.taskset.families is not None:
            num_tasks = self.taskset.num_tasks
            record["planted_families"] = self.taskset.families.tolist()
            record["ari_planted"] = float(adjusted_rand_score(
                self.taskset.families, _labels_of(chosen, num_tasks)))
            record["ari_planted_spectral"] = float(adjusted_rand_score(
                self.taskset.families, _labels_of(spectral, num_tasks)))
        self.run.write_json("groups.json", record)

    def _comparison(self) -> None:
        taskset, options = self.taskset, self.config.groups
        record = self.run.read_json("groups.json")
        seconds = self.run.stage_seconds()
        search = sum(seconds[stage] for stage in ("gradients", "surrogates", "affinity", "groups"))
        chosen = record["groups"]
        plans = [("gradtag", None, chosen, search)]
        if options.spectral:
            plans.append(("spectral", None, record["spectral_groups"], search))
        sizes = [len(group) for group in chosen]
        plans += [("random", seed, random_groups(sizes, taskset.num_tasks, self.config.seed + seed),
                   0.0) for seed in range(options.random_seeds)]
        if options.single_task:
            plans.append(("single", None, [[task] for task in range(taskset.num_tasks)], 0.0))
        jobs = [(plan, group) for plan in plans for group in plan[2]]
        results = train_groups(taskset, [group for _, group in jobs], self.config,
                               "group models")
        base = self.run.read_json("base_metrics.json")
        rows = [comparison_row("all", [list(range(taskset.num_tasks))], [base])]
        per_task = {"all": base["tasks"]}
        for grouping, seed, groups, search_seconds in plans:
            mine = [result for (plan, _), result in zip(jobs, results) if plan[0] == grouping
                    and plan[1] == seed]
            rows.append(comparison_row(grouping, groups, mine, search_seconds, seed))
            key = grouping if seed is None else f"{grouping}-seed{seed}"
            per_task[key] = sorted((task for result in mine for task in result["tasks"]),
                                   key=lambda task: task["task"])
        self.run.write_json("comparison.json", rows)
        self.run.write_json("task_metrics.json", per_task)
        gradtag = [result for (plan, _), result in zip(jobs, results) if plan[0] == "gradtag"]
        for number, result in enumerate(gradtag):
            self.run.save_torch(f"group_models/group{number}.pt", {
                "tasks": [task["task"] for task in result["tasks"]],
                "spec": result["spec"].__dict__, "state": result["state"]})
