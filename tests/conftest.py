"""Test configuration: offline Hub, ``tests/`` importable (harness, toy_arch), and parallel runs by default.

``python -m pytest -q tests`` runs the suite on pytest-xdist workers, one per CPU core (at most ``MAX_WORKERS``, and
no more than memory allows), each with ``cores // workers`` torch/OpenMP threads, so the cores stay busy without
being oversubscribed. Serial runs: ``-p no:xdist`` or ``-n 0``; any ``-n``/``--dist`` given on the command line wins.
Naming test files or test ids (``pytest tests/test_arm.py``) runs serially unless ``-n`` asks otherwise: spawning
workers costs more than it saves there.

Under xdist the known-slow tests start first (``SLOW_TESTS``) so the run does not end with one worker alone on a
three-minute test, and tests that must not overlap run on one worker, one after the other (``XDIST_GROUPS``,
``WHOLE_MODULES``; ``pytest_xdist_make_scheduler``).
"""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1", ... in an xdist worker, None in the controller or a serial run
if WORKER and "HF_MODULES_CACHE" not in os.environ:
    # trust_remote_code copies a model folder's code into HF_MODULES_CACHE/transformers_modules/<folder name>/; two
    # workers loading folders of the same name would overwrite each other's files there while importing them.
    # Set before transformers is imported (it reads the variable once).
    _modules_cache = tempfile.mkdtemp(prefix=f"hf_fer_modules_{WORKER}_")
    os.environ["HF_MODULES_CACHE"] = _modules_cache
    atexit.register(shutil.rmtree, _modules_cache, ignore_errors=True)

MAX_WORKERS = 8
WORKER_MEMORY = 3 * 2**30  # peak RSS of one worker (the recipe and export tests) is about 2 GiB

# Known slow tests ("file::function", every parametrization), with their duration in seconds on a 2-core CPU
# (`--durations`, 1 thread). Only the order matters: under xdist the slowest start first.
SLOW_TESTS: dict[str, float] = {
    "test_training_recipes.py::test_synthetic_recipe_learns": 50,
    "test_training_faults.py::test_killed_anywhere_resumes_to_the_uninterrupted_result": 45,
    "test_synthetic.py::test_small_cnn_learns_the_expressions": 28,
    "test_training_faults.py::test_disk_full_says_so_and_keeps_the_previous_state": 20,
    "test_poster_v2_compile.py::test_torch_compile_fullgraph_matches_eager": 18,
    "test_training.py::test_two_processes_share_weights_and_count_every_eval_sample_once": 16,
    "test_training.py::test_kill_and_resume_gives_the_uninterrupted_weights": 14,
    "test_batch_predict.py::test_two_cpu_processes_cover_every_row_exactly_once": 23,
    "test_batch_predict.py::test_killed_run_resumes_at_its_last_chunk_and_gives_the_same_result": 10,
}
# Parametrizations slower than the test's other ones, by test id.
SLOW_TESTS.update({
    "test_training_recipes.py::test_synthetic_recipe_learns[dmue]": 180,
    "test_training_recipes.py::test_synthetic_recipe_learns[vt_nr]": 120,
    "test_training_recipes.py::test_synthetic_recipe_learns[poster_v2]": 90,
    "test_training_recipes.py::test_synthetic_recipe_learns[arm]": 80,
})

# Tests that must not run at the same time: each group runs on one worker, one test after the other.
XDIST_GROUPS: dict[str, tuple[str, ...]] = {
    # `accelerate launch` with 2 CPU processes: torchrun listens on accelerate's fixed default port, 29500
    "accelerate_port_29500": (
        "test_training.py::test_two_processes_share_weights_and_count_every_eval_sample_once",
        "test_batch_predict.py::test_two_cpu_processes_cover_every_row_exactly_once",
        "test_cli_output.py::test_two_processes_print_each_user_facing_line_once",
    ),
}
# Modules whose module-scoped fixture is a training run: one worker runs the whole module and builds it once.
WHOLE_MODULES: tuple[str, ...] = ("test_training_faults.py",)


@functools.lru_cache(maxsize=None)
def _test_key(nodeid: str, rootpath: Path) -> tuple[str, str]:
    """("file::function", "file::function[params]") of a test id, the file relative to tests/."""
    file, _, rest = nodeid.partition("::")
    path = (rootpath / file).resolve()
    name = path.relative_to(TESTS).as_posix() if path.is_relative_to(TESTS) else path.name
    return f"{name}::{rest.split('[', 1)[0]}", f"{name}::{rest}"


def _work_unit(nodeid: str, rootpath: Path) -> str:
    """What one worker runs in one go: a group of ``XDIST_GROUPS`` or ``WHOLE_MODULES``, else the test alone."""
    function, full = _test_key(nodeid, rootpath)
    for group, members in XDIST_GROUPS.items():
        if function in members or full in members:
            return f"group:{group}"
    module = function.split("::", 1)[0]
    return f"module:{module}" if module in WHOLE_MODULES else nodeid


def _estimated_seconds(nodeid: str, rootpath: Path) -> float:
    function, full = _test_key(nodeid, rootpath)
    return SLOW_TESTS.get(full, SLOW_TESTS.get(function, 0.0))


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers() -> int:
    """One worker per core, capped by ``MAX_WORKERS`` and by memory (``PYTEST_XDIST_AUTO_NUM_WORKERS`` overrides)."""
    requested = os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS")
    if requested:
        return max(0, int(requested))
    workers = min(available_cpus(), MAX_WORKERS)
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        workers = min(workers, max(1, memory // WORKER_MEMORY))
    except (AttributeError, ValueError, OSError):
        pass
    return workers


def _names_only_files(config: pytest.Config) -> bool:
    """Whether the command line names test files or test ids only (no folder)."""
    paths = [Path(str(arg).split("::", 1)[0]) for arg in config.args]
    return bool(paths) and not any(path.is_dir() for path in paths)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """In the controller, before xdist reads its options: ``-n`` from the CPU count unless given, ``--dist loadgroup``,
    and the threads each worker (and each process a test starts) may use."""
    if WORKER or not config.pluginmanager.hasplugin("xdist"):
        return
    option = config.option
    if option.numprocesses is None and not option.tx and option.dist == "no":
        if option.collectonly or option.usepdb or _names_only_files(config):
            return
        option.numprocesses = default_workers()
    if option.numprocesses in ("auto", "logical"):
        option.numprocesses = config.hook.pytest_xdist_auto_num_workers(config=config)
    if not option.numprocesses or option.numprocesses < 2:
        option.numprocesses = 0  # one worker is a serial run with extra start-up
        return
    if option.dist == "no":
        option.dist = "loadgroup"
        option.loadscopereorder = False  # keep the longest-first order of pytest_collection_modifyitems
    threads = str(max(1, available_cpus() // option.numprocesses))
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # inherited by the workers and what they start
        os.environ.setdefault(variable, threads)


def pytest_configure(config: pytest.Config) -> None:
    # Marks used by the vendored transformers common tests (tests/transformers_common/); registered so pytest
    # does not warn about unknown marks.
    for mark in ("accelerate_tests", "torch_compile_test"):
        config.addinivalue_line("markers", f"{mark}: transformers common-test mark")
    if WORKER and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


_FAILED_MODULES: set[str] = set()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    report = yield
    if report.failed:
        _FAILED_MODULES.add(item.nodeid.split("::")[0])
    return report


@pytest.fixture(scope="module", autouse=True)
def _remove_module_scratch(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Delete the folders a module's fixtures made with ``tmp_path_factory`` once the module is done (pytest keeps
    them to the end of the run: several GiB over the suite), unless one of its tests failed here."""
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    yield
    if request.node.nodeid.split("::")[0] in _FAILED_MODULES:
        return
    for path in set(base.iterdir()) - before:
        shutil.rmtree(path, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not WORKER:
        return  # serial: pytest's order, which sets up each module's fixtures once
    # In each worker (the controller schedules in the workers' collection order): the longest work units first,
    # the rest in collection order; the tests of a unit stay together.
    units = [_work_unit(item.nodeid, config.rootpath) for item in items]
    cost: dict[str, float] = {}
    first: dict[str, int] = {}
    for index, (item, unit) in enumerate(zip(items, units)):
        cost[unit] = cost.get(unit, 0.0) + _estimated_seconds(item.nodeid, config.rootpath)
        first.setdefault(unit, index)
    order = sorted(range(len(items)), key=lambda index: (-cost[units[index]], first[units[index]], index))
    items[:] = [items[index] for index in order]


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # before xdist's own choice; absent with -p no:xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadgroup`` with the groups of this file: xdist's own ``xdist_group`` mark has no effect with
    pytest 9 (xdist 3.8 renames the test ids through an attribute pytest no longer reads), so the controller
    assigns whole work units (``_work_unit``) itself, one at a time, to whichever worker runs short of tests."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class WorkUnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _work_unit(nodeid, config.rootpath)

    return WorkUnitScheduling(config, log)


def _serve_folder(folder, ranges: bool):
    """A local HTTP server (a thread) serving ``folder``; with ``ranges`` it answers ``Range: bytes=a-b`` requests
    (206) like real web servers do, which FFmpeg needs to seek in an MP4 whose index is at the end."""
    import functools
    import http.server
    import io
    import os
    import re
    import threading

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def send_head(self):
            requested = self.headers.get("Range") if ranges else None
            path = self.translate_path(self.path)
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", requested or "")
            if match is None or not os.path.isfile(path):
                return super().send_head()
            size = os.path.getsize(path)
            start = int(match.group(1))
            end = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
            if start >= size:
                self.send_error(416)
                return None
            with open(path, "rb") as handle:
                handle.seek(start)
                body = handle.read(end - start + 1)
            self.send_response(206)
            self.send_header("Content-Type", self.guess_type(path))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            return io.BytesIO(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _served(folder, ranges: bool):
    server = _serve_folder(folder, ranges=ranges)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def http_folder(tmp_path):
    """A local HTTP server serving ``tmp_path`` (no range requests, like Python's ``http.server``): the URL prefix
    and the folder."""
    yield from _served(tmp_path, ranges=False)


@pytest.fixture
def ranged_http_folder(tmp_path):
    """Like ``http_folder``, from a server that answers range requests (as nginx, S3 or a CDN do)."""
    yield from _served(tmp_path, ranges=True)
