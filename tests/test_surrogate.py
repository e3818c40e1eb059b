"""The batched surrogate solver against scikit-learn and scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegression
from surrogate_helpers import problem_blocks, weighted_task_losses

from grouping.affinity import surrogate_layout, surrogate_schedule, surrogate_solver
from grouping.affinity.rows import RowTable
from grouping.affinity.surrogate import subset_losses
from grouping.affinity.surrogate_solver import fit_logistic_offset


def _problem(rng: np.random.Generator, rows: int, dim: int, offset_scale: float = 0.0):
    features = rng.normal(size=(rows, dim))
    truth = rng.normal(size=dim)
    offset = offset_scale * rng.normal(size=rows)
    labels = (rng.random(rows) < 1 / (1 + np.exp(-(features @ truth + offset)))).astype(float)
    return features, offset, labels, np.ones(rows)


def test_matches_sklearn_without_offset():
    rng = np.random.default_rng(0)
    problems = [_problem(rng, rows, 12) for rows in (300, 250, 400)]
    l2 = 0.05
    fitted = fit_logistic_offset(problem_blocks(problems), l2, tolerance=1e-12).numpy()
    for (features, _, labels, weights), coefficients in zip(problems, fitted):
        reference = LogisticRegression(C=1 / (2 * l2 * weights.sum()), fit_intercept=False,
                                       tol=1e-12, max_iter=10_000).fit(features, labels).coef_[0]
        assert np.allclose(coefficients, reference, rtol=1e-3, atol=1e-6 * np.abs(reference).max())


def test_matches_scipy_with_offset_and_weights():
    rng = np.random.default_rng(1)
    features, offset, labels, _ = _problem(rng, 500, 8, offset_scale=2.0)
    weights = rng.uniform(0.5, 3.0, size=500)
    l2 = 0.01

    def objective(w):
        logits = offset + features @ w
        losses = np.logaddexp(0, logits) - labels * logits
        return weights @ losses / weights.sum() + l2 * w @ w

    reference = minimize(objective, np.zeros(8), method="L-BFGS-B",
                         options={"gtol": 1e-12, "ftol": 1e-15}).x
    fitted = fit_logistic_offset(problem_blocks([(features, offset, labels, weights)]), l2,
                                 tolerance=1e-12)[0].numpy()
    assert np.allclose(fitted, reference, rtol=1e-4, atol=1e-6)


def test_padding_does_not_change_a_solution():
    rng = np.random.default_rng(2)
    short, long = _problem(rng, 50, 6), _problem(rng, 400, 6)
    alone = fit_logistic_offset(problem_blocks([short]), 0.1)[0]
    batched = fit_logistic_offset(problem_blocks([short, long]), 0.1)[0]
    assert torch.allclose(alone, batched, atol=1e-9)


def test_subset_losses_are_validation_losses_of_each_task():
    rng = np.random.default_rng(3)
    num_tasks, per_split, dim = 4, 60, 5
    tasks = np.repeat(np.arange(num_tasks), 2 * per_split)
    split = np.tile(np.repeat([0, 1], per_split), num_tasks).astype(np.int8)
    labels = rng.integers(0, 2, len(tasks)).astype(np.float32)
    offsets = np.stack([np.arange(num_tasks) * 2 * per_split,
                        np.arange(num_tasks) * 2 * per_split + per_split,
                        (np.arange(num_tasks) + 1) * 2 * per_split], axis=1)
    rows = RowTable(np.arange(len(tasks)), tasks, split, labels,
                    np.ones(len(tasks), np.float32), offsets)
    f0 = rng.normal(size=len(tasks))
    gradients = rng.normal(size=(len(tasks), dim))
    subset = np.array([[0, 2]])
    losses = subset_losses(subset, rows, f0, gradients, l2=0.1)
    train = rows.rows_of(subset[0], 0)
    weights = fit_logistic_offset(problem_blocks([(gradients[train], f0[train], labels[train],
                                                 np.ones(len(train)))]), 0.1)[0].numpy()
    for position, task in enumerate(subset[0]):
        val = np.arange(offsets[task, 1], offsets[task, 2])
        expected = weighted_task_losses(f0[val] + gradients[val] @ weights, labels[val],
                                        np.ones(len(val)), [slice(0, len(val))])[0]
        assert losses[0, position] == pytest.approx(expected, rel=1e-9)


def _row_table(rng: np.random.Generator, num_tasks: int, dim: int):
    """A row table with tasks of different sizes and weights, its base logits and its float32
    gradient features drawn from a planted logistic model."""
    lengths = rng.integers(40, 90, size=(num_tasks, 2))
    ends = np.cumsum(lengths.ravel()).reshape(num_tasks, 2)
    offsets = np.column_stack([ends[:, 1] - lengths.sum(1), ends[:, 0], ends[:, 1]])
    count = int(ends[-1, 1])
    task = np.repeat(np.arange(num_tasks), lengths.sum(1))
    split = np.concatenate([np.repeat([0, 1], pair) for pair in lengths]).astype(np.int8)
    gradients = rng.normal(size=(count, dim)).astype(np.float32)
    f0 = rng.normal(size=count).astype(np.float32)
    truth = (rng.normal(size=dim) + 0.5 * rng.normal(size=(num_tasks, dim))) / dim ** 0.5
    logits = f0 + np.einsum("rd,rd->r", gradients, truth[task])
    labels = (rng.random(count) < 1 / (1 + np.exp(-logits))).astype(np.float32)
    weights = rng.choice([1.0, 3.0], size=count).astype(np.float32)
    rows = RowTable(np.arange(count), task, split, labels, weights, offsets)
    return rows, f0, gradients


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def test_float32_features_match_float64():
    rng = np.random.default_rng(4)
    rows, f0, gradients = _row_table(rng, 8, 16)
    subsets = np.array([[0, 1, 2], [3, 5, 7], [1, 4, 6]])
    exact = subset_losses(subsets, rows, f0, gradients, l2=0.05)
    fast = subset_losses(subsets, rows, f0, gradients, l2=0.05, dtype=torch.float32)
    assert np.allclose(fast, exact, rtol=1e-3, atol=0)


def test_float32_stops_at_its_resolution(monkeypatch):
    rng = np.random.default_rng(5)
    problems = [_problem(rng, rows, 20) for rows in (300, 400)]
    steps = []
    newton_direction = surrogate_solver._newton_direction

    def counted(*args):
        steps.append(1)
        return newton_direction(*args)

    monkeypatch.setattr(surrogate_solver, "_newton_direction", counted)
    fast = fit_logistic_offset(problem_blocks(problems, torch.float32), 0.05, tolerance=1e-14)
    assert len(steps) < 15
    exact = fit_logistic_offset(problem_blocks(problems), 0.05, tolerance=1e-12)
    assert torch.allclose(fast, exact, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_subset_losses_on_a_device_match_the_cpu(device):
    rng = np.random.default_rng(6)
    rows, f0, gradients = _row_table(rng, 6, 12)
    subsets = np.array([[0, 2, 4], [1, 3, 5]])
    expected = subset_losses(subsets, rows, f0, gradients, l2=0.1)
    losses = subset_losses(subsets, rows, f0, gradients, l2=0.1, device=torch.device(device))
    assert np.allclose(losses, expected, rtol=1e-6, atol=0)
    problems = [_problem(rng, count, 12, offset_scale=1.0) for count in (200, 150)]
    fitted = fit_logistic_offset(problem_blocks(problems, device=device), 0.1)
    assert fitted.device.type == device
    assert torch.allclose(fitted.cpu(), fit_logistic_offset(problem_blocks(problems), 0.1),
                          rtol=1e-6, atol=1e-9)


def test_groups_of_subsets_do_not_change_the_losses(monkeypatch):
    rng = np.random.default_rng(7)
    rows, f0, gradients = _row_table(rng, 8, 10)
    subsets = np.array([[0, 1, 2], [2, 3, 4], [4, 5, 6], [5, 6, 7], [0, 3, 7]])
    together = subset_losses(subsets, rows, f0, gradients, l2=0.1)
    monkeypatch.setattr(surrogate_schedule, "CPU_CACHE_BYTES", 1)
    monkeypatch.setattr(surrogate_schedule, "CPU_PAIR_ROWS", 1)
    alone = subset_losses(subsets, rows, f0, gradients, l2=0.1)
    assert np.allclose(alone, together, rtol=1e-9, atol=0)
    row_bytes = 10 * 8
    budget = 300 * row_bytes
    monkeypatch.setattr(surrogate_schedule, "CPU_CACHE_BYTES", budget)
    runs = surrogate_schedule.subset_groups(subsets, rows, 10, torch.float64, torch.device("cpu"))
    assert 1 < len(runs) < len(subsets)
    train = rows.offsets[:, 1] - rows.offsets[:, 0]
    for run in runs:
        tasks = np.unique(subsets[run])
        assert run.stop - run.start == 1 or train[tasks].sum() * row_bytes <= budget
    cached = subset_losses(subsets, rows, f0, gradients, l2=0.1)
    assert np.allclose(cached, together, rtol=1e-9, atol=0)


class _RecordedRows:
    """An array that records the row indices it is read at."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.read = array, []

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    def __getitem__(self, index):
        self.read.append(np.asarray(index))
        return self.array[index]


def test_subset_losses_read_only_their_rows_of_a_memory_map(tmp_path):
    rng = np.random.default_rng(8)
    rows, f0, gradients = _row_table(rng, 6, 8)
    subsets = np.array([[1, 4], [0, 4]])
    used = np.concatenate([rows.rows_of(np.unique(subsets), split) for split in (0, 1)])
    poisoned = np.full_like(gradients, np.nan)
    poisoned[used] = gradients[used]
    np.save(tmp_path / "features.npy", poisoned)
    mapped = np.load(tmp_path / "features.npy", mmap_mode="r")
    recorded = _RecordedRows(mapped)
    losses = subset_losses(subsets, rows, f0, recorded, l2=0.1)
    assert np.isin(np.concatenate(recorded.read), used).all()
    assert np.array_equal(losses, subset_losses(subsets, rows, f0, mapped, l2=0.1))
    assert np.allclose(losses, subset_losses(subsets, rows, f0, gradients, l2=0.1), rtol=1e-12)


def _objective_at(problem, l2: float):
    features, offset, labels, weights = (torch.tensor(array, dtype=torch.float64)
                                         for array in problem)

    def objective(w):
        logits = offset + features @ w
        losses = torch.nn.functional.softplus(logits) - labels * logits
        return weights @ losses / weights.sum() + l2 * w @ w
    return objective


def test_task_curvatures_are_the_hessian_at_zero_times_the_weight():
    rng = np.random.default_rng(9)
    rows, f0, gradients = _row_table(rng, 3, 6)
    curvatures = surrogate_solver.task_curvatures(rows, f0, gradients)
    for task in range(3):
        train = np.arange(rows.offsets[task, 0], rows.offsets[task, 1])
        problem = (gradients[train], f0[train], rows.label[train], rows.weight[train])
        hessian = torch.autograd.functional.hessian(_objective_at(problem, 0.0),
                                                    torch.zeros(6, dtype=torch.float64))
        expected = hessian.numpy() * rows.weight[train].sum()
        assert np.allclose(curvatures[task], expected, rtol=1e-5, atol=1e-6)


def test_preconditioning_changes_the_path_not_the_solution(monkeypatch):
    rng = np.random.default_rng(10)
    rows, f0, gradients = _row_table(rng, 8, 12)
    subsets = np.array([[0, 1, 2], [2, 3, 4], [4, 5, 6], [1, 6, 7]])
    monkeypatch.setattr(surrogate_schedule, "PRECONDITION_ROWS", 0.0)
    assert surrogate_schedule.preconditioned(subsets, rows, 12)
    with_curvature = subset_losses(subsets, rows, f0, gradients, l2=0.1)
    given = subset_losses(subsets, rows, f0, gradients, l2=0.1,
                          curvatures=surrogate_solver.task_curvatures(rows, f0, gradients))
    monkeypatch.setattr(surrogate_schedule, "PRECONDITION_ROWS", np.inf)
    plain = subset_losses(subsets, rows, f0, gradients, l2=0.1)
    assert np.allclose(with_curvature, plain, rtol=1e-6, atol=0)
    assert np.array_equal(with_curvature, given)


def test_first_preconditioned_newton_system_takes_one_iteration(monkeypatch):
    rng = np.random.default_rng(11)
    problems = [_problem(rng, rows, 15, offset_scale=1.0) for rows in (300, 200)]
    blocks = problem_blocks(problems)
    passes = []
    forward = surrogate_layout.TaskBlocks.forward

    def counted(self, vectors):
        passes.append(1)
        return forward(self, vectors)

    monkeypatch.setattr(surrogate_layout.TaskBlocks, "forward", counted)
    prob = torch.sigmoid(blocks.offset)
    share = blocks.weight / blocks.per_subset(blocks.weight)[blocks.row_subset]
    gradient = blocks.backward(share * (prob - blocks.label))
    inverse = surrogate_solver._preconditioner(surrogate_solver._block_curvatures(blocks),
                                               blocks.per_subset(blocks.weight), 0.1)
    step, _ = surrogate_solver._newton_direction(blocks, inverse, share * prob * (1 - prob),
                                                 gradient, 0.1)
    assert len(passes) == 1
    for number, problem in enumerate(problems):
        zero = torch.zeros(15, dtype=torch.float64)
        exact = torch.linalg.solve(torch.autograd.functional.hessian(_objective_at(problem, 0.1),
                                                                     zero), gradient[number])
        assert torch.allclose(step[number], exact, rtol=1e-8, atol=1e-12)


def test_tasks_of_very_different_lengths_share_no_padding_bucket():
    rng = np.random.default_rng(12)
    problems = [_problem(rng, rows, 5) for rows in (400, 380, 60, 50, 5)]
    blocks = problem_blocks(problems)
    assert [bucket.features.shape[1] for bucket in blocks.buckets] == [400, 60, 5]
    together = fit_logistic_offset(blocks, 0.1, tolerance=1e-12)
    for number, problem in enumerate(problems):
        alone = fit_logistic_offset(problem_blocks([problem]), 0.1, tolerance=1e-12)[0]
        assert torch.allclose(together[number], alone, rtol=1e-9, atol=1e-12)


def test_task_major_passes_equal_subset_by_subset_products():
    rng = np.random.default_rng(13)
    rows, f0, gradients = _row_table(rng, 6, 7)
    subsets = np.array([[0, 1, 2], [1, 2, 3], [0, 4, 5]])
    blocks = surrogate_layout.subset_blocks(subsets, 0, rows, f0, gradients, torch.float64,
                                            torch.device("cpu"))
    vectors = torch.tensor(rng.normal(size=(3, 7)))
    weighted_forward = blocks.per_subset(blocks.weight * blocks.forward(vectors)).numpy()
    backward = blocks.backward(blocks.weight * blocks.offset).numpy()
    for number, subset in enumerate(subsets):
        train = rows.rows_of(subset, 0)
        features = gradients[train].astype(np.float64)
        assert np.allclose(backward[number], features.T @ (rows.weight[train] * f0[train]))
        assert weighted_forward[number] == pytest.approx(
            rows.weight[train] @ features @ vectors[number].numpy())


def test_every_batch_fits_as_the_driver_decided(ray_session):
    """Long tasks' subsets alone would be preconditioned, all subsets together are not: the
    workers follow the driver's decision for every batch."""
    from grouping.config import AffinityConfig, RayConfig
    from workers.estimates import compute_subset_losses

    rng = np.random.default_rng(12)
    dim, num_tasks = 64, 8
    lengths = np.array([[200, 40]] * 4 + [[20, 40]] * 4)
    ends = np.cumsum(lengths.ravel()).reshape(num_tasks, 2)
    offsets = np.column_stack([ends[:, 1] - lengths.sum(1), ends[:, 0], ends[:, 1]])
    count = int(ends[-1, 1])
    task = np.repeat(np.arange(num_tasks), lengths.sum(1))
    split = np.concatenate([np.repeat([0, 1], pair) for pair in lengths]).astype(np.int8)
    gradients = rng.normal(size=(count, dim)).astype(np.float32) / 4
    f0 = rng.normal(size=count).astype(np.float32)
    labels = (rng.random(count) < 0.4).astype(np.float32)
    rows = RowTable(np.arange(count), task, split, labels, np.ones(count, np.float32), offsets)
    subsets = np.array([[0, 1], [2, 3], [0, 2], [1, 3], [4, 5], [6, 7], [4, 6], [5, 7]])
    long, short = subsets[:4], subsets[4:]
    assert surrogate_schedule.preconditioned(long, rows, dim)
    assert not surrogate_schedule.preconditioned(subsets, rows, dim)
    options = AffinityConfig(estimator="surrogate", l2=0.1)
    losses = compute_subset_losses(subsets, rows, f0, gradients, options,
                                   RayConfig(num_workers=2, subsets_per_batch=4))
    plain = [subset_losses(batch, rows, f0, gradients, 0.1, precondition=False)
             for batch in (long, short)]
    assert np.array_equal(losses, np.concatenate(plain))
    assert not np.array_equal(plain[0], subset_losses(long, rows, f0, gradients, 0.1))
