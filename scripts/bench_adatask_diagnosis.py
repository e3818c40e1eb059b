"""Why AdaTask's all-in-one model loses to Adam's with many tasks: the size of the shared update
per step against Adam's, its alignment with the full-batch gradient, and the validation loss,
for the first K tasks of a task set (K = 2, 10, all by default).

For each K and optimizer, one model of K heads is trained with the config's loop settings
(batch size, learning rate, positive weights) for ``--epochs`` epochs from the same
initialisation and batch order. Every step records the norm of the trunk's update; every
``--probe``-th step also the cosine between that update and the negative full-batch gradient
of the training loss at the same parameters (the direction gradient descent would take).
Prints per K and optimizer the median update norm and its ratio to Adam's (same K, measured
in the same run), the median cosine, and the validation loss after the first epoch and at
its best.

    python scripts/bench_adatask_diagnosis.py --configs configs/yeast.yaml configs/cal500.yaml \
        configs/sbm_100.yaml configs/snap_amazon_sub.yaml --tasks 2 10 100 --trained

With ``--trained``, the all-in-one model of every task is then trained as the comparison
trains it (the config's loop and early stopping, from scratch) with each optimizer at each of
its learning rates (``--lrs NAME=LR,LR``; the lowest validation criterion kept per seed) over
``--seeds`` initialisation seeds: mean and worst-task test F1 and mean test AP, with standard
errors over seeds, and each optimizer's gap to Adam beyond two standard errors or not.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.bench_cli import add_common_arguments, limit_threads, write_figures  # noqa: E402

OPTIMIZERS = ("adam", "adatask_adam", "adatask_adam_mean")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", type=Path,
                        default=[ROOT / "configs" / "quickstart.yaml"])
    parser.add_argument("--tasks", nargs="+", type=int, default=[2, 10, 100],
                        help="K: the first K tasks (capped at the task set's size)")
    parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--probe", type=int, default=10,
                        help="full-batch gradient every this many steps")
    parser.add_argument("--trained", action="store_true",
                        help="also train the all-in-one model to convergence per optimizer")
    parser.add_argument("--lrs", nargs="+", default=["adam=0.001", "adatask_adam=0.0003,0.001",
                                                     "adatask_adam_mean=0.001,0.003"],
                        help="NAME=LR,LR: the learning rates searched per optimizer")
    parser.add_argument("--seeds", type=int, default=3)
    add_common_arguments(parser, device="cpu")
    return parser.parse_args(argv)


def diagnose(taskset, config, num_tasks: int, optimizer: str, epochs: int, probe: int,
             seed: int) -> dict:
    """Update norms, cosines with the full-batch descent direction and the validation loss
    curve of one K-head model trained with ``optimizer``."""
    import numpy as np
    import torch

    from grouping.models import ModelSpec, build_model
    from grouping.tasksets import TRAIN, VAL
    from grouping.training import _loss, make_step, positive_weights, predict

    columns = np.arange(num_tasks)
    model = build_model(ModelSpec.from_config(config.model, taskset.features.shape[1],
                                              num_tasks), seed)
    features = torch.tensor(taskset.features)
    targets = torch.from_numpy(taskset.labels[:, columns].astype(np.float32))
    train_rows = torch.from_numpy(taskset.indices(TRAIN))
    val_rows = torch.from_numpy(taskset.indices(VAL))
    pos_weight = positive_weights(taskset.labels[taskset.indices(TRAIN)][:, columns],
                                  config.train.pos_weight)
    step = make_step(model, optimizer, config.train, None, pos_weight)
    trunk = list(model.trunk.parameters())
    generator = torch.Generator().manual_seed(seed)
    norms, cosines, curve, count = [], [], [], 0
    for _ in range(epochs):
        model.train()
        order = train_rows[torch.randperm(len(train_rows), generator=generator)]
        for start in range(0, len(order), config.train.batch_size):
            rows = order[start:start + config.train.batch_size]
            descent = None
            if count % probe == 0:
                loss = _loss(model(features[train_rows]), targets[train_rows], pos_weight)
                descent = -torch.cat([grad.flatten()
                                      for grad in torch.autograd.grad(loss, trunk)])
            before = torch.cat([param.detach().flatten() for param in trunk])
            step(model(features[rows]), targets[rows])
            update = torch.cat([param.detach().flatten() for param in trunk]) - before
            norms.append(float(update.norm()))
            if descent is not None and update.norm() > 0 and descent.norm() > 0:
                cosines.append(float(update @ descent / (update.norm() * descent.norm())))
            count += 1
        curve.append(float(_loss(predict(model, features[val_rows]), targets[val_rows],
                                 pos_weight)))
    return {"median_norm": float(np.median(norms)), "median_cosine": float(np.median(cosines)),
            "first_val_loss": curve[0], "best_val_loss": min(curve),
            "best_epoch": int(np.argmin(curve)) + 1, "val_curve": curve}


def trained_rows(taskset, config, rates: dict[str, list[float]], seeds: list[int]) -> list[dict]:
    """The all-in-one model per optimizer: per seed the learning rate of the lowest validation
    criterion, then mean and standard error over seeds of its test figures."""
    import torch

    from grouping.evaluation.comparison import Plan, comparison_row, gap, summarize_rows
    from grouping.families import BinaryLabelFamily

    tasks = list(range(taskset.num_tasks))
    rows = []
    for optimizer, lrs in rates.items():
        for seed in seeds:
            runs = [BinaryLabelFamily().train_group(
                        taskset, tasks, config, config.train.model_copy(update={"lr": lr}),
                        torch.device("cpu"), optimizer, seed=seed) | {"lr": lr} for lr in lrs]
            best = min(runs, key=lambda run: run["best_criterion"])
            rows.append(comparison_row(Plan("all", [tasks]), [best], optimizer, seed,
                                       BinaryLabelFamily.metric_names))
    summary = summarize_rows(rows)
    reference = next(line for line in summary if line["optimizer"] == "adam")
    for line in summary:
        line["lrs_chosen"] = [row["lrs"][0] for row in rows
                              if row["optimizer"] == line["optimizer"]]
        line["vs_adam_f1"] = gap(line, reference, "mean_test_f1").describe()
        line["vs_adam_worst_f1"] = gap(line, reference, "worst_test_f1").describe()
    return summary


def trained_markdown(name: str, summary: list[dict]) -> list[str]:
    from grouping.evaluation.comparison import format_mean

    lines = [f"### {name}: all-in-one model trained to convergence", "",
             "| optimizer | lr chosen per seed | mean test F1 | worst-task test F1 | mean test AP "
             "| vs Adam (mean F1) | vs Adam (worst F1) |", "|---|---|---|---|---|---|---|"]
    for line in summary:
        rates = ", ".join(f"{lr:g}" for lr in line["lrs_chosen"])
        lines.append(f"| {line['optimizer']} | {rates} | {format_mean(line, 'mean_test_f1')} | "
                     f"{format_mean(line, 'worst_test_f1')} | "
                     f"{format_mean(line, 'mean_test_ap')} | {line['vs_adam_f1']} | "
                     f"{line['vs_adam_worst_f1']} |")
    return [*lines, ""]


def markdown(name: str, figures: dict) -> list[str]:
    lines = [f"### {name}", "",
             "| K | optimizer | median ‖Δ trunk‖ per step | ratio to Adam | median cosine with "
             "−∇L (full batch) | val loss after epoch 1 | best val loss (epoch) |",
             "|---|---|---|---|---|---|---|"]
    for tasks, rows in figures.items():
        for optimizer, row in rows.items():
            lines.append(f"| {tasks} | {optimizer} | {row['median_norm']:.2e} | "
                         f"{row['ratio_to_adam']:.2f} | {row['median_cosine']:.3f} | "
                         f"{row['first_val_loss']:.4f} | {row['best_val_loss']:.4f} "
                         f"({row['best_epoch']}) |")
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    limit_threads(arguments)
    from grouping.config import load_config
    from grouping.tasksets import build_taskset

    start, figures = time.perf_counter(), {}
    for path in arguments.configs:
        # The optimizers are compared from a random start, as its published figures were.
        config = load_config(path, ["model.skip_init=random"])
        taskset = build_taskset(config)
        per_config: dict = {}
        for tasks in sorted({min(count, taskset.num_tasks) for count in arguments.tasks}):
            rows = {optimizer: diagnose(taskset, config, tasks, optimizer, arguments.epochs,
                                        arguments.probe, arguments.seed)
                    for optimizer in arguments.optimizers}
            reference = rows.get("adam", next(iter(rows.values())))["median_norm"]
            for row in rows.values():
                row["ratio_to_adam"] = row["median_norm"] / reference
            per_config[tasks] = rows
        figures[path.stem] = {"steps": per_config}
        print("\n".join(markdown(path.stem, per_config)), flush=True)
        if arguments.trained:
            rates = {name: [float(lr) for lr in lrs.split(",")]
                     for name, _, lrs in (text.partition("=") for text in arguments.lrs)}
            seeds = [arguments.seed + offset for offset in range(arguments.seeds)]
            summary = trained_rows(taskset, config, rates, seeds)
            figures[path.stem]["trained"] = summary
            print("\n".join(trained_markdown(path.stem, summary)), flush=True)
    print(f"{time.perf_counter() - start:.0f} s")
    write_figures(arguments.json, {"epochs": arguments.epochs, "configs": figures})
    return 0


if __name__ == "__main__":
    sys.exit(main())
