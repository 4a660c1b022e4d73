"""conftest.py's lists of slow and grouped tests name tests that exist: a renamed test must not silently lose its
place at the head of a parallel run, or its group (tests that must not overlap)."""
import ast
from pathlib import Path

import conftest

TESTS = Path(__file__).resolve().parent


def _defined_tests(module: str) -> set[str]:
    tree = ast.parse((TESTS / module).read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.update(f"{node.name}::{child.name}" for child in node.body if isinstance(child, ast.FunctionDef))
    return names


def test_every_listed_test_exists():
    listed = list(conftest.SLOW_TESTS) + [name for members in conftest.XDIST_GROUPS.values() for name in members]
    missing = []
    for key in listed:
        module, function = key.split("::", 1)
        if not (TESTS / module).is_file() or function.split("[", 1)[0] not in _defined_tests(module):
            missing.append(key)
    assert not missing, f"conftest.py lists tests that do not exist (renamed?): {missing}"
    assert all((TESTS / module).is_file() for module in conftest.WHOLE_MODULES), conftest.WHOLE_MODULES


def test_worker_count_follows_the_override_and_the_cpus(monkeypatch):
    monkeypatch.setenv("PYTEST_XDIST_AUTO_NUM_WORKERS", "3")
    assert conftest.default_workers() == 3
    monkeypatch.delenv("PYTEST_XDIST_AUTO_NUM_WORKERS")
    workers = conftest.default_workers()
    assert 1 <= workers <= min(conftest.available_cpus(), conftest.MAX_WORKERS)


def test_work_units_keep_groups_and_whole_modules_together():
    root = TESTS.parent
    group = {conftest._work_unit(f"tests/{name}", root) for name in conftest.XDIST_GROUPS["accelerate_port_29500"]}
    assert group == {"group:accelerate_port_29500"}
    module = conftest.WHOLE_MODULES[0]
    assert conftest._work_unit(f"tests/{module}::test_a", root) == conftest._work_unit(f"tests/{module}::test_b[x]", root)
    alone = "tests/test_labels.py::test_something[7]"
    assert conftest._work_unit(alone, root) == alone
    assert conftest._estimated_seconds("tests/test_training_recipes.py::test_synthetic_recipe_learns[dmue]", root) == 180
