"""Output gradients: torch.func path against per-example autograd, the projection against
itself, and the linearisation f0 + gᵀw against the model at θ0 + P·w."""

from __future__ import annotations

import torch
from torch.func import functional_call

from grouping.affinity.gradients import output_gradients
from grouping.affinity.projection import dense_projection, projection_block
from grouping.models import ModelSpec, build_model
from grouping.models.sign_mlp import HEAD_PARAMETERS

SPEC = ModelSpec(in_dim=12, hidden=(8, 6), num_heads=5)


def _setup(dim: int = 64):
    model = build_model(SPEC, seed=3)
    projection = dense_projection({n: p.shape for n, p in model.named_parameters()}, dim, 7)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(40, SPEC.in_dim, generator=generator)
    tasks = torch.randint(0, SPEC.num_heads, (40,), generator=generator)
    return model, projection, inputs, tasks


def test_vectorized_gradients_equal_a_per_example_loop():
    model, projection, inputs, tasks = _setup()
    f0, projected = output_gradients(model, projection, inputs, tasks)
    for row in range(len(inputs)):
        model.zero_grad()
        logit = model(inputs[row:row + 1])[0, tasks[row]]
        logit.backward()
        expected = sum(param.grad.flatten() @ projection[name]
                       for name, param in model.named_parameters())
        assert torch.allclose(f0[row], logit.detach(), atol=1e-6)
        assert torch.allclose(projected[row], expected, rtol=1e-4, atol=1e-5)


def test_per_head_rows_project_as_the_dense_gradient_does():
    """With a per-task skip, projecting only a row's own head and skip rows gives the dense
    projection of its whole gradient (those blocks are zero outside the task's row); rows of
    several tasks in one call, in any order."""
    spec = ModelSpec(in_dim=12, hidden=(8, 6), num_heads=5, skip=True)
    model = build_model(spec, seed=3).double()
    names = {name: param.shape for name, param in model.named_parameters()}
    projection = {name: block.double() for name, block in dense_projection(names, 32, 7).items()}
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(40, spec.in_dim, generator=generator, dtype=torch.float64)
    tasks = torch.randint(0, spec.num_heads, (40,), generator=generator)
    f0, dense = output_gradients(model, projection, inputs, tasks)
    per_head = [name for name in names if name.startswith(HEAD_PARAMETERS)]
    assert per_head == ["heads.weight", "heads.bias", "skip.weight"]
    sparse_f0, sparse = output_gradients(model, projection, inputs, tasks, per_head=per_head)
    assert torch.equal(f0, sparse_f0)
    assert torch.allclose(sparse, dense, rtol=1e-10, atol=1e-12)
    # a fixed skip (no gradient, no block) still gives each row its own task's skip row
    model.skip.weight.requires_grad_(False)
    trainable = {name: block for name, block in projection.items() if name != "skip.weight"}
    f0, dense = output_gradients(model, trainable, inputs, tasks)
    sparse_f0, sparse = output_gradients(model, trainable, inputs, tasks, per_head=per_head)
    assert torch.equal(f0, sparse_f0)
    assert torch.allclose(sparse, dense, rtol=1e-10, atol=1e-12)


def test_projection_is_rebuilt_identically_from_the_seed():
    first = projection_block("trunk.0.weight", 96, 32, seed=5)
    assert torch.equal(first, projection_block("trunk.0.weight", 96, 32, seed=5))
    assert not torch.equal(first, projection_block("trunk.0.weight", 96, 32, seed=6))
    assert not torch.equal(first, projection_block("trunk.2.weight", 96, 32, seed=5))


def test_projection_preserves_inner_products_on_average():
    block = projection_block("w", 400, 2000, seed=0)
    vectors = torch.randn(2, 400, generator=torch.Generator().manual_seed(1))
    exact = vectors[0] @ vectors[1]
    projected = (vectors[0] @ block) @ (vectors[1] @ block)
    norms = vectors[0].norm() * vectors[1].norm()
    assert abs(projected - exact) / norms < 0.1


def test_linearised_logits_match_the_model_after_a_small_step():
    model, projection, inputs, tasks = _setup(dim=64)
    model, inputs = model.double(), inputs.double()
    projection = {name: block.double() for name, block in projection.items()}
    f0, projected = output_gradients(model, projection, inputs, tasks)
    step = 1e-3 * torch.randn(64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    moved = {name: param.detach() + (projection[name] @ step).reshape(param.shape)
             for name, param in model.named_parameters()}
    with torch.no_grad():
        actual = functional_call(model, moved, (inputs,)).gather(1, tasks[:, None])[:, 0]
    change = actual - f0
    error = (f0 + projected @ step) - actual
    assert change.norm() > 0
    assert error.norm() <= 0.02 * change.norm()
