#!/usr/bin/env python
"""Check that code marked ``# Copied from hf_fer.models.<arch>.<module>.<name>`` still equals its source.

Model folders are self-contained remote code, so they cannot import each other: shared helpers are copied,
transformers-style, and this script keeps the copies honest. A marker sits on the line right above a
``def``/``class`` and may end with renames applied to the source before comparing, e.g.::

    # Copied from hf_fer.models.arm.modeling_arm.build_resnet_trunk
    # Copied from hf_fer.models.arm.modeling_arm.ArmPreTrainedModel.load_backbone_weights with Arm->Dacl, arm->dacl

Renames are applied in order, as plain text replacements. Exits 1 naming every drifted copy.
Usage: ``python utils/check_copies.py [--root REPO_ROOT]``.
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

MARKER = re.compile(r"^(?P<indent>\s*)# Copied from hf_fer\.models\.(?P<target>[\w.]+)(?:\s+with\s+(?P<renames>.+))?\s*$")


def _definition_source(path: Path, qualified_name: list[str]) -> str:
    """Source text of the (possibly nested) def/class ``qualified_name`` in ``path``, dedented, decorators included."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    body = ast.parse(text).body
    node = None
    for name in qualified_name:
        node = next((n for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == name), None)
        if node is None:
            raise LookupError(f"{path}: no definition {'.'.join(qualified_name)}")
        body = node.body
    start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
    return _dedent(lines[start:node.end_lineno])


def _dedent(lines: list[str]) -> str:
    indent = min((len(line) - len(line.lstrip()) for line in lines if line.strip()), default=0)
    return "\n".join(line[indent:].rstrip() for line in lines)


def _copy_source(lines: list[str], marker_index: int) -> str:
    """The def/class starting right after the marker: up to the next line indented at or left of its header."""
    start = marker_index + 1
    header_indent = len(lines[start]) - len(lines[start].lstrip())
    end = start
    while end < len(lines) and lines[end].lstrip().startswith("@"):  # decorators belong to the definition
        end += 1
    end += 1
    while end < len(lines):
        line = lines[end]
        if line.strip() and len(line) - len(line.lstrip()) <= header_indent and not line.lstrip().startswith(")"):
            break
        end += 1
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    return _dedent(lines[start:end])


def _resolve(models_dir: Path, target: str) -> tuple[Path, list[str]]:
    """``arm.modeling_arm.Name.method`` → (models/arm/modeling_arm.py, ["Name", "method"])."""
    parts = target.split(".")
    for split in range(len(parts) - 1, 0, -1):
        path = models_dir.joinpath(*parts[:split]).with_suffix(".py")
        if path.is_file():
            return path, parts[split:]
    raise LookupError(f"no module for hf_fer.models.{target}")


def check_file(path: Path, models_dir: Path) -> list[str]:
    """Messages for every drifted or broken copy in ``path``."""
    problems = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        match = MARKER.match(line)
        if not match:
            continue
        where = f"{path}:{index + 1}"
        try:
            source_path, name = _resolve(models_dir, match["target"])
            expected = _definition_source(source_path, name)
        except (LookupError, SyntaxError) as error:
            problems.append(f"{where}: copy of hf_fer.models.{match['target']}: {error}")
            continue
        for rename in filter(None, (r.strip() for r in (match["renames"] or "").split(","))):
            old, arrow, new = rename.partition("->")
            if not arrow:
                problems.append(f"{where}: bad rename {rename!r} (expected Old->New)")
                continue
            expected = expected.replace(old.strip(), new.strip())
        if index + 1 >= len(lines):
            problems.append(f"{where}: marker with no definition after it")
            continue
        if _copy_source(lines, index) != expected:
            header = next(line.strip() for line in lines[index + 1:] if not line.lstrip().startswith("@"))
            problems.append(f"{where}: {header} differs from hf_fer.models.{match['target']}"
                            + (f" (after renames {match['renames']})" if match["renames"] else ""))
    return problems


def check_copies(root: Path) -> list[str]:
    models_dir = root / "src" / "hf_fer" / "models"
    problems = []
    for path in sorted(models_dir.rglob("*.py")):
        problems += check_file(path, models_dir)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1], help="repository root")
    args = parser.parse_args(argv)
    problems = check_copies(args.root)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} copied definition(s) drifted from their source", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
