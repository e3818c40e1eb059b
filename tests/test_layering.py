"""The library's layering, read from the source: every import of every module is checked
against the layers below, so an upward import fails here rather than as a cycle at run time.

grouping/ is the algorithms (never Ray, never the workers); inside it, models know nothing of
training or the affinity estimate, training knows nothing of the affinity estimate, and the
task families sit between them: they build on models, training and the affinity package's row
table and gradient engines, and the affinity stages, the error report and the workers ask
them, never the other way round.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package or module prefix → the prefixes its modules must never import
FORBIDDEN = {
    "grouping": ("workers", "ray"),
    "grouping.tasksets": ("grouping.models", "grouping.training", "grouping.lm_training",
                          "grouping.affinity", "grouping.evaluation", "grouping.clustering",
                          "grouping.dmtg", "grouping.families"),
    "grouping.models": ("grouping.affinity", "grouping.training", "grouping.lm_training",
                        "grouping.evaluation", "grouping.clustering", "grouping.dmtg",
                        "grouping.families"),
    "grouping.optim": ("grouping.affinity", "grouping.training", "grouping.lm_training",
                       "grouping.evaluation", "grouping.clustering", "grouping.dmtg"),
    "grouping.training": ("grouping.affinity", "grouping.evaluation", "grouping.clustering",
                          "grouping.dmtg", "grouping.families"),
    "grouping.stacked_fine_tuning": ("grouping.affinity", "grouping.evaluation",
                                     "grouping.clustering", "grouping.dmtg",
                                     "grouping.families"),
    "grouping.lm_training": ("grouping.affinity", "grouping.evaluation", "grouping.clustering",
                             "grouping.dmtg", "grouping.families"),
    "grouping.clustering": ("grouping.affinity", "grouping.evaluation", "grouping.training",
                            "grouping.lm_training", "grouping.dmtg"),
    "grouping.affinity": ("grouping.evaluation", "grouping.clustering", "grouping.dmtg"),
    # what a task family builds on: the row table, the output-gradient engines
    **{f"grouping.affinity.{module}": ("grouping.families",) for module in (
        "rows", "gradients", "lm_outputs", "hook_gradients", "projectors", "projection")},
    "grouping.families": ("grouping.clustering", "grouping.dmtg", "grouping.evaluation.report",
                          "grouping.affinity.error_stage", "grouping.affinity.estimators",
                          "grouping.affinity.true_affinity", "grouping.affinity.computers"),
}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of its code (absolute names)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layering_violations(root: Path = ROOT) -> list[str]:
    """'module imports name' for every import the table above forbids."""
    found = []
    for path in sorted((root / "grouping").rglob("*.py")):
        module = _module_name(path, root)
        for layer, forbidden in FORBIDDEN.items():
            if not _within(module, layer):
                continue
            found += [f"{module} imports {name}" for name in sorted(imports_of(path))
                      if any(_within(name, banned) for banned in forbidden)]
    return found


def test_no_library_module_imports_upwards():
    assert layering_violations() == []


def test_the_walk_finds_an_upward_import(tmp_path):
    """The check is not vacuous: a model module that imports the affinity package fails it."""
    (tmp_path / "grouping" / "models").mkdir(parents=True)
    (tmp_path / "grouping" / "models" / "bad.py").write_text(
        "def f():\n    from grouping.affinity.computers import feature_dim\n    import ray\n")
    assert sorted(layering_violations(tmp_path)) == [
        "grouping.models.bad imports grouping.affinity.computers",
        "grouping.models.bad imports grouping.affinity.computers.feature_dim",
        "grouping.models.bad imports ray"]


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_every_layer_exists(layer):
    """A renamed package would make its row of the table check nothing."""
    path = ROOT / Path(*layer.split("."))
    assert path.is_dir() or path.with_suffix(".py").is_file()
