"""utils/check_copies.py: copies marked "# Copied from hf_fer.models..." must equal their source."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "utils" / "check_copies.py"


def _run(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--root", str(root)], capture_output=True, text=True, timeout=60)


def _models_copy(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "src" / "hf_fer" / "models", tmp_path / "src" / "hf_fer" / "models",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_repository_copies_are_in_sync():
    markers = [p for p in (REPO / "src" / "hf_fer" / "models").rglob("*.py") if "# Copied from hf_fer.models." in p.read_text()]
    assert len(markers) >= 2  # the check has something to check
    result = _run(REPO)
    assert result.returncode == 0, result.stderr


def test_a_hand_edited_copy_fails_naming_it(tmp_path):
    root = _models_copy(tmp_path)
    dacl = root / "src" / "hf_fer" / "models" / "dacl" / "modeling_dacl.py"
    text = dacl.read_text()
    edited = text.replace('ignored = [k for k in cleaned if k.startswith("fc.")]', 'ignored = [k for k in cleaned if k.startswith("head.")]')
    assert edited != text
    dacl.write_text(edited)
    result = _run(root)
    assert result.returncode == 1
    assert "modeling_dacl.py" in result.stderr and "load_backbone_weights" in result.stderr
    assert "build_resnet_trunk" not in result.stderr  # the untouched copy in the same file still passes


def test_renames_are_applied_and_required(tmp_path):
    root = _models_copy(tmp_path)
    dmue = root / "src" / "hf_fer" / "models" / "dmue" / "modeling_dmue.py"
    text = dmue.read_text()
    assert "_is_single_label with Dacl->Dmue" in text
    dmue.write_text(text.replace("_is_single_label with Dacl->Dmue", "_is_single_label"))
    result = _run(root)
    assert result.returncode == 1 and "_is_single_label" in result.stderr


def test_decorated_copies_are_compared_whole(tmp_path):
    models = tmp_path / "src" / "hf_fer" / "models"
    (models / "a").mkdir(parents=True)
    (models / "b").mkdir()
    (models / "a" / "m.py").write_text("import torch\n\n\n@torch.no_grad()\ndef helper_a(x):\n    return x + 1\n")
    copy = "import torch\n\n\n# Copied from hf_fer.models.a.m.helper_a with _a->_b\n@torch.no_grad()\ndef helper_b(x):\n    return x + 1\n\n\ndef other():\n    return 2\n"
    (models / "b" / "m.py").write_text(copy)
    assert _run(tmp_path).returncode == 0
    (models / "b" / "m.py").write_text(copy.replace("return x + 1", "return x + 2"))
    result = _run(tmp_path)
    assert result.returncode == 1 and "def helper_b(x):" in result.stderr and "b/m.py:4" in result.stderr
