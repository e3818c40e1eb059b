"""Where the all-in-one model's training goes from its start: mean validation and test AP
after every epoch, per variant of the config (the same ``NAME=KEY=VALUE;...`` variants as
``bench_models.py``) and initialisation seed.

The model is built and trained as a group model of every task is (the config's spec and
start, ``make_step``'s Adam, :func:`grouping.training.run_epochs`' batch order and seeding)
for a fixed number of epochs, with no early stopping, so that the whole curve is seen:
whether any epoch's test AP beats the start's says whether any stopping rule could.

    python scripts/bench_training_curves.py --config configs/snap_dblp_sub.yaml --epochs 10 \\
        --variant 'default=' --variant 'lr1e-5=train.lr=1e-5'
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.bench_cli import add_common_arguments, limit_threads, write_figures  # noqa: E402
from scripts.bench_models import parse_variant  # noqa: E402


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=2, help="initialisation seeds per variant")
    parser.add_argument("--variant", action="append", type=parse_variant, default=None,
                        metavar="NAME=KEY=VALUE;...", help="default: the config itself")
    add_common_arguments(parser, device=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    limit_threads(arguments)
    import torch

    from grouping.config import ConfigError, load_config
    from grouping.models import ModelSpec, build_model
    from grouping.models.per_task_linear import fit_per_task_linear
    from grouping.tasksets import TEST, TRAIN, VAL, build_taskset
    from grouping.training import (
        make_step,
        mean_average_precision,
        positive_weights,
        predict,
        run_epochs,
    )

    variants = arguments.variant or [("config", [])]
    try:
        configs = {name: load_config(arguments.config, settings) for name, settings in variants}
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    first = next(iter(configs.values()))
    with warnings.catch_warnings():  # PyG's beta-feature notices about sparse tensors
        warnings.simplefilter("ignore", UserWarning)
        taskset = build_taskset(first)
    linear = fit_per_task_linear(taskset) if any(
        config.model.linear_start for config in configs.values()) else None
    features = torch.tensor(taskset.features)
    targets = torch.from_numpy(taskset.labels.astype(np.float32))
    rows = {split: torch.from_numpy(taskset.indices(split)) for split in (TRAIN, VAL, TEST)}
    train_labels = taskset.labels[taskset.indices(TRAIN)]

    def mean_ap(model: torch.nn.Module, split: int) -> float:
        logits = predict(model, features[rows[split]])
        return mean_average_precision(logits, targets[rows[split]])

    figures: dict = {"config": first.name, "epochs": arguments.epochs, "variants": {}}
    for name, config in configs.items():
        spec = ModelSpec.from_config(config.model, taskset.features.shape[1],
                                     taskset.num_tasks)
        curves = []
        for seed in range(arguments.seed, arguments.seed + arguments.seeds):
            model = build_model(spec, seed, linear if config.model.linear_start else None)
            step = make_step(model, "adam", config.train, None,
                             positive_weights(train_labels, config.train.pos_weight))
            curve: list[tuple[float, float]] = []

            def criterion(model: torch.nn.Module = model,
                          curve: list[tuple[float, float]] = curve) -> float:
                curve.append((mean_ap(model, VAL), mean_ap(model, TEST)))
                return -float(len(curve))  # every epoch "improves": the whole curve runs

            run_epochs(model, rows[TRAIN],
                       lambda batch, model=model, step=step: step(model(features[batch]),
                                                                 targets[batch]),
                       criterion, lambda: {}, lambda state: None, config.train, seed,
                       arguments.epochs, keep_best=True)
            curves.append(curve)
        table = np.array(curves)  # [seeds, epochs + 1, (val, test)]
        mean = table.mean(0)
        best_val = int(np.argmax(mean[:, 0]))
        figures["variants"][name] = {
            "val_ap": mean[:, 0].tolist(), "test_ap": mean[:, 1].tolist(),
            "start_test_ap": float(mean[0, 1]), "best_test_ap": float(mean[:, 1].max()),
            "best_test_epoch": int(np.argmax(mean[:, 1])), "best_val_epoch": best_val}
        print(f"{name}: start val {mean[0, 0]:.3f} test {mean[0, 1]:.3f}; best test "
              f"{mean[:, 1].max():.3f} at epoch {int(np.argmax(mean[:, 1]))}; best val at epoch "
              f"{best_val}; test by epoch " + " ".join(f"{value:.3f}" for value in mean[:, 1]))
    write_figures(arguments.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
