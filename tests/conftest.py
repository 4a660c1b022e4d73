"""Test configuration: offline Hub, deterministic CPU threads, ``tests/`` importable (harness, toy_arch)."""
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


def pytest_configure(config):
    # Marks used by the vendored transformers common tests (tests/transformers_common/); registered so pytest
    # does not warn about unknown marks.
    for mark in ("accelerate_tests", "torch_compile_test"):
        config.addinivalue_line("markers", f"{mark}: transformers common-test mark")
