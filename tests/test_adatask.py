"""AdaTask optimizers, per-task gradients, the dominance metric and their training-loop use."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest
import torch
from conftest import small_binary_taskset
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits

from grouping.config import TrainConfig
from grouping.models import ModelSpec, build_model
from grouping.optim import (
    AdamTaskSplit,
    AdaTask,
    AdaTaskAdagrad,
    AdaTaskAdam,
    AdaTaskAdamMean,
    AdaTaskRMSprop,
    DominanceTracker,
    task_gradients,
)
from grouping.training import train_model

CPU = torch.device("cpu")


def _small_model(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))


def _batches(seed: int, steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 5, generator=generator), torch.randn(16, 3, generator=generator))
            for _ in range(steps)]


def _one_task_pair(adatask: type[AdaTask], reference: type[torch.optim.Optimizer],
                   options: dict, steps: int = 20) -> tuple[nn.Module, nn.Module]:
    """Train the same model with a torch optimizer and with one-task AdaTask (first layer
    shared, fed through task gradients; second layer task-specific, through ``.grad``)."""
    ours, theirs = _small_model(0), _small_model(0)
    shared, specific = list(ours[0].parameters()), list(ours[2].parameters())
    optimizer = adatask([{"params": shared}, {"params": specific, "shared": False}], **options)
    torch_optimizer = reference(theirs.parameters(), **options)
    for inputs, targets in _batches(1, steps):
        torch_optimizer.zero_grad()
        nn.functional.mse_loss(theirs(inputs), targets).backward()
        torch_optimizer.step()
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(ours(inputs), targets)
        loss.backward(inputs=specific, retain_graph=True)
        optimizer.step(task_gradients(loss.unsqueeze(0), shared))
    return ours, theirs


@pytest.mark.parametrize(("adatask", "reference", "options"), [
    (AdaTaskAdam, torch.optim.Adam, {"lr": 0.01}),
    (AdaTaskAdamMean, torch.optim.Adam, {"lr": 0.01}),
    (AdaTaskAdamMean, torch.optim.AdamW, {"lr": 0.003, "weight_decay": 0.5}),
    (AdaTaskAdam, torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1}),
    (AdaTaskAdam, torch.optim.AdamW, {"lr": 0.003, "betas": (0.8, 0.99), "eps": 1e-6,
                                      "weight_decay": 0.5}),
    (AdaTaskRMSprop, torch.optim.RMSprop, {"lr": 0.01}),
    (AdaTaskRMSprop, torch.optim.RMSprop, {"lr": 0.003, "alpha": 0.9, "eps": 1e-6}),
    (AdaTaskAdagrad, torch.optim.Adagrad, {"lr": 0.05}),
])
def test_one_task_matches_the_torch_optimizer(adatask, reference, options):
    ours, theirs = _one_task_pair(adatask, reference, options)
    for mine, torch_param in zip(ours.parameters(), theirs.parameters()):
        assert torch.allclose(mine, torch_param, atol=1e-6, rtol=0)
    assert not torch.allclose(ours[0].weight, _small_model(0)[0].weight, atol=1e-3)


def _two_task_steps(model: nn.Sequential, optimizer: AdaTask,
                    batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    shared, specific = list(model[0].parameters()), list(model[2].parameters())
    for inputs, targets in batches:
        optimizer.zero_grad()
        errors = (model(inputs) - targets) ** 2
        losses = torch.stack([errors[:, :2].mean(), 10 * errors[:, 2].mean()])
        losses.sum().backward(inputs=specific, retain_graph=True)
        optimizer.step(task_gradients(losses, shared))


@pytest.mark.parametrize("adatask", [AdaTaskAdam, AdaTaskAdamMean, AdaTaskRMSprop,
                                     AdaTaskAdagrad])
def test_state_dict_round_trip_continues_the_same_run(adatask):
    def fresh(model: nn.Sequential) -> AdaTask:
        return adatask([{"params": model[0].parameters()},
                        {"params": model[2].parameters(), "shared": False}],
                       lr=0.01, weight_decay=0.01)

    batches = _batches(2, 10)
    straight = _small_model(0)
    _two_task_steps(straight, fresh(straight), batches)
    first = _small_model(0)
    optimizer = fresh(first)
    _two_task_steps(first, optimizer, batches[:5])
    saved = copy.deepcopy(optimizer.state_dict())
    resumed = copy.deepcopy(first)
    reloaded = fresh(resumed)
    reloaded.load_state_dict(saved)
    assert [group["shared"] for group in reloaded.param_groups] == [True, False]
    _two_task_steps(resumed, reloaded, batches[5:])
    for mine, reference in zip(resumed.parameters(), straight.parameters()):
        assert torch.equal(mine, reference)


def test_task_gradient_methods_agree_and_sum_to_the_loss_gradient():
    model = build_model(ModelSpec(12, (8, 6), 5), seed=0)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(32, 12, generator=generator)
    targets = (torch.rand(32, 5, generator=generator) < 0.3).float()
    shared = list(model.trunk.parameters())

    def losses() -> torch.Tensor:
        return binary_cross_entropy_with_logits(model(inputs), targets,
                                                reduction="none").mean(0) / 5

    vmapped = task_gradients(losses(), shared, method="vmap")
    looped = task_gradients(losses(), shared, method="loop")
    summed = torch.autograd.grad(losses().sum(), shared)
    for by_vmap, by_loop, total, param in zip(vmapped, looped, summed, shared):
        assert by_vmap.shape == (5, *param.shape)
        assert torch.allclose(by_vmap, by_loop, atol=1e-7)
        assert torch.allclose(by_vmap.sum(0), total, atol=1e-7)
    assert not torch.allclose(vmapped[0][0], vmapped[0][1])


def test_adam_task_split_sums_to_the_adam_step():
    model = _small_model(0)
    shared = list(model[0].parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    split = AdamTaskSplit(optimizer, shared, DominanceTracker(["weight", "bias"]))
    for inputs, targets in _batches(3, 5):
        optimizer.zero_grad()
        errors = (model(inputs) - targets) ** 2
        losses = torch.stack([errors[:, 0].mean(), errors[:, 1:].mean()])
        losses.sum().backward(retain_graph=True)
        before = [param.detach().clone() for param in shared]
        updates = split.step(task_gradients(losses, shared))
        for param, start, update in zip(shared, before, updates):
            assert torch.allclose(param - start, update.sum(0), atol=1e-7)


def test_dominance_fraction_counts_parameters_one_task_dominates():
    tracker = DominanceTracker(["layer"], decay=0.5)
    tracker.update([torch.tensor([[3.0, 1.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0]])])
    tracker.update([torch.tensor([[3.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])])
    assert tracker.fractions() == {"layer": 0.5}


class _ThreeTaskRegression(nn.Module):
    """A linear trunk narrower than the input, and one linear head per task."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Sequential(nn.Linear(16, 6))
        self.heads = nn.ModuleList(nn.Linear(6, 2) for _ in range(3))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        hidden = self.trunk(inputs)
        return torch.stack([head(hidden) for head in self.heads])


def _train_dominated(adatask: type[AdaTask] | None,
                     steps: int = 40) -> tuple[list[float], dict[str, float]]:
    """Three regression tasks on a shared trunk, the first one's loss scaled by 100; return
    the unscaled task losses and the trunk's dominance fractions after ``steps`` steps."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(256, 16, generator=generator)
    maps = torch.randn(3, 16, 2, generator=generator)
    targets = (torch.einsum("nd,kdo->kno", inputs, maps)
               + 0.1 * torch.randn(3, 256, 2, generator=generator))
    scale = torch.tensor([100.0, 1.0, 1.0])
    model = _ThreeTaskRegression()
    shared, specific = list(model.trunk.parameters()), list(model.heads.parameters())
    tracker = DominanceTracker(["weight", "bias"])
    if adatask:
        optimizer = adatask([{"params": shared}, {"params": specific, "shared": False}],
                            lr=0.01, tracker=tracker)
        step: Callable[[list[torch.Tensor]], object] = optimizer.step
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        step = AdamTaskSplit(optimizer, shared, tracker).step
    for _ in range(steps):
        optimizer.zero_grad()
        losses = ((model(inputs) - targets) ** 2).mean((1, 2)) * scale
        losses.sum().backward(inputs=specific if adatask else None, retain_graph=True)
        step(task_gradients(losses, shared))
    with torch.no_grad():
        losses = ((model(inputs) - targets) ** 2).mean((1, 2))
    return losses.tolist(), tracker.fractions()


@pytest.mark.parametrize("adatask", [AdaTaskAdam, AdaTaskAdamMean])
def test_adatask_frees_the_dominated_tasks(adatask):
    adam_losses, adam_dominance = _train_dominated(adatask=None)
    ada_losses, ada_dominance = _train_dominated(adatask=adatask)
    assert adam_dominance["weight"] > 0.95
    assert ada_dominance["weight"] < 0.5
    # At the same η the mean of three task steps moves the trunk a third as far: the
    # dominated tasks still end below Adam's loss, by less.
    bound = 0.7 if adatask is AdaTaskAdam else 1.0
    for task in (1, 2):
        assert ada_losses[task] < bound * adam_losses[task]


def _shared_step_norms(optimizer_class: type[torch.optim.Optimizer] | type[AdaTask],
                       steps: int = 50) -> float:
    """Median norm of the update of one shared parameter [64] over ``steps`` steps, where
    5 of 100 tasks carry a steady gradient and 95 only zero-mean noise (rare labels: most
    tasks see no positive example in a batch)."""
    generator = torch.Generator().manual_seed(0)
    param = torch.zeros(64, requires_grad=True)
    signal = torch.randn(64, generator=generator)
    if optimizer_class is torch.optim.Adam:
        optimizer = torch.optim.Adam([param], lr=0.01)
    else:
        optimizer = optimizer_class([{"params": [param]}], lr=0.01)
    norms = []
    for _ in range(steps):
        grads = torch.randn(100, 64, generator=generator)
        grads[:5] = signal + 0.1 * grads[:5]
        before = param.detach().clone()
        if optimizer_class is torch.optim.Adam:
            param.grad = grads.sum(0)
            optimizer.step()
        else:
            optimizer.step([grads])
        norms.append(float((param.detach() - before).norm()))
    return float(np.median(norms))


def test_the_mean_of_task_steps_stays_within_an_adam_step_with_many_noisy_tasks():
    adam = _shared_step_norms(torch.optim.Adam)
    assert _shared_step_norms(AdaTaskAdam) > 4 * adam  # the paper's sum: about K·η
    assert _shared_step_norms(AdaTaskAdamMean) < 1.5 * adam


@pytest.mark.parametrize("optimizer", ["adatask_adam", "adatask_rmsprop", "adatask_adagrad"])
def test_train_model_with_adatask_reports_dominance_per_trunk_layer(optimizer):
    taskset = small_binary_taskset()
    model = build_model(ModelSpec(6, (8, 8), 4), seed=0)
    config = TrainConfig(lr=0.01, batch_size=16, max_epochs=5)
    result = train_model(model, taskset, np.arange(4), config, 0, CPU, optimizer=optimizer,
                         track_dominance=True)
    assert result.best_criterion < result.criterion_curve[0]
    assert set(result.dominance) == {"trunk.0.weight", "trunk.0.bias", "trunk.2.weight",
                                     "trunk.2.bias"}
    assert all(0 <= fraction <= 1 for fraction in result.dominance.values())
    untracked = train_model(build_model(ModelSpec(6, (8, 8), 4), seed=0), taskset,
                            np.arange(4), config, 0, CPU, optimizer=optimizer)
    assert untracked.dominance is None


def test_tracking_dominance_leaves_the_adam_run_unchanged():
    taskset = small_binary_taskset()
    config = TrainConfig(lr=0.01, batch_size=16, max_epochs=4, patience=100)
    results = [train_model(build_model(ModelSpec(6, (8,), 4), seed=0), taskset, np.arange(4),
                           config, 0, CPU, active_heads=np.array([0, 2, 3]),
                           track_dominance=tracked)
               for tracked in (False, True)]
    assert results[0].criterion_curve == results[1].criterion_curve
    assert all(torch.equal(results[0].state[name], results[1].state[name])
               for name in results[0].state)
    assert results[0].dominance is None
    assert set(results[1].dominance) == {"trunk.0.weight", "trunk.0.bias"}


def test_the_diagnosis_benchmark_measures_steps_against_adams_in_the_same_run():
    import importlib.util
    from pathlib import Path

    from conftest import small_sbm_config

    from grouping.config import parse_config

    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_adatask_diagnosis.py"
    spec = importlib.util.spec_from_file_location("bench_adatask_diagnosis", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    config = parse_config(small_sbm_config(train={"max_epochs": 3, "patience": 2}))
    taskset = small_binary_taskset()
    rows = {name: bench.diagnose(taskset, config, 4, name, epochs=2, probe=2, seed=0)
            for name in ("adam", "adatask_adam", "adatask_adam_mean")}
    assert all(-1 <= row["median_cosine"] <= 1 and len(row["val_curve"]) == 2
               for row in rows.values())
    # With K tasks the paper's sum takes about K normalised steps, the mean about one.
    assert rows["adatask_adam"]["median_norm"] == pytest.approx(
        4 * rows["adatask_adam_mean"]["median_norm"], rel=0.5)
    summary = bench.trained_rows(taskset, config, {"adam": [1e-3], "adatask_adam": [1e-3, 3e-3]},
                                 [0, 1])
    assert [line["optimizer"] for line in summary] == ["adam", "adatask_adam"]
    assert all(len(line["lrs_chosen"]) == 2 for line in summary)
    assert set(summary[1]["lrs_chosen"]) <= {1e-3, 3e-3}
    assert "standard errors" in summary[1]["vs_adam_f1"]
