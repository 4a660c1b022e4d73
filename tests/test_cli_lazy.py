"""``hf-fer`` answers ``--help``, argument errors and missing paths without importing torch or transformers,
and its torch-free copies of the library's choices (converter options, modes, protocols...) match the library."""
import argparse
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Runs each command line through the console-script entry point named in setup.py, in ONE fresh Python, and
# reports what each printed, its exit code, and which heavy modules were imported by the end.
PROBE = r"""
import contextlib, importlib, io, json, sys
module_name, function_name = sys.argv[1].split(":")
entry = getattr(importlib.import_module(module_name), function_name)
results = []
for argv in json.loads(sys.argv[2]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        sys.argv = ["hf-fer", *argv]
        try:
            code = entry()
        except SystemExit as exit_:
            code = exit_.code
    results.append({"argv": argv, "code": code, "out": out.getvalue(), "err": err.getvalue()})
heavy = sorted(name for name in sys.modules if name.split(".")[0] in ("torch", "transformers", "hf_fer", "datasets", "numpy"))
print(json.dumps({"results": results, "heavy": heavy}))
"""


def console_entry_point() -> str:
    """``hf-fer``'s target as setup.py declares it (what ``pip install`` writes into the console script)."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            scripts = ast.literal_eval(node.value)["console_scripts"]
            (target,) = [s.split("=", 1)[1].strip() for s in scripts if s.split("=", 1)[0].strip() == "hf-fer"]
            return target
    raise AssertionError("setup.py declares no hf-fer console script")


def test_help_and_argument_errors_import_neither_torch_nor_transformers(tmp_path):
    (tmp_path / "runs").mkdir()
    typo = str(tmp_path / "runs" / "typo")
    commands = [
        ["--help"],
        *[[name, "--help"] for name in ("demo", "predict", "convert", "train", "evaluate", "compare", "prepare-dataset", "push",
                                       "benchmark", "export")],
        ["convert", "--arch", "dmue", "--help"],
        ["train", "--recipe", "r.yaml"],  # missing required arguments
        ["benchmark", "--modes", "warp"],  # bad choice
        ["predict", "photo.jpg", "--model", typo],  # a local path that does not exist
        ["train", "--recipe", str(tmp_path / "nope.yaml"), "--dataset", "synthetic", "--output", str(tmp_path / "o")],
        ["convert", "--arch", "arm", "--output", str(tmp_path / "c"), "--keep-aux-branches"],  # another architecture's option
        ["preditc", "x.jpg"],
    ]
    probe = subprocess.run([sys.executable, "-c", PROBE, console_entry_point(), json.dumps(commands)], capture_output=True, text=True,
                           timeout=120, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    report = json.loads(probe.stdout)
    assert report["heavy"] == [], f"hf-fer imported {report['heavy'][:10]} for help/argument errors"
    by_command = {" ".join(r["argv"]): r for r in report["results"]}

    top = by_command["--help"]
    assert top["code"] == 0 and "hf-fer <subcommand>" in top["out"] and "prepare-dataset" in top["out"]
    for name in ("demo", "predict", "convert", "train", "evaluate", "compare", "prepare-dataset", "push", "benchmark", "export"):
        result = by_command[f"{name} --help"]
        assert result["code"] == 0 and result["out"].startswith(f"usage: hf-fer {name} "), (name, result["out"][:200])
        assert "--verbose" in result["out"]
    convert_help = by_command["convert --help"]["out"]
    for option in ("--keep-aux-branches", "--last-stride", "--ir50", "--mobilefacenet", "--image-size", "--de-albino-stride", "--centers-seed"):
        assert option in convert_help, option
    # grouped by architecture: each option is listed under its own --arch heading
    sections = convert_help.split("options of each architecture")[1]
    assert sections.index("--arch dmue") < sections.index("--keep-aux-branches") < sections.index("--arch mini_xception")
    assert sections.index("--arch poster_v2") < sections.index("--ir50") < sections.index("--arch vt_nr")
    assert "DMUE (--arch dmue)" in by_command["convert --arch dmue --help"]["out"]

    missing = by_command["train --recipe r.yaml"]
    assert missing["code"] == 2 and missing["err"].startswith("usage: hf-fer train") and "--dataset, --output" in missing["err"]
    assert by_command["benchmark --modes warp"]["code"] == 2 and "invalid choice: 'warp'" in by_command["benchmark --modes warp"]["err"]
    typo_error = by_command[f"predict photo.jpg --model {typo}"]
    assert typo_error["code"] == 1 and typo_error["err"].count("\n") == 1
    assert typo_error["err"].startswith(f"hf-fer predict: error: no such folder: {typo} (--model: read as a local path since")
    assert "Hub model id is NAME or ORG/NAME" in typo_error["err"]
    recipe_error = next(r for r in report["results"] if any("nope.yaml" in a for a in r["argv"]))
    assert recipe_error["code"] == 1 and "error: no such file: " in recipe_error["err"] and "nope.yaml (--recipe does not exist)" in recipe_error["err"]
    other_arch = next(r for r in report["results"] if "--keep-aux-branches" in r["argv"] and "--help" not in r["argv"])
    assert other_arch["code"] == 2 and "--keep-aux-branches is an option of --arch dmue" in other_arch["err"]
    unknown = by_command["preditc x.jpg"]
    assert unknown["code"] == 2 and "did you mean 'predict'" in unknown["err"]


def test_python_m_hf_fer_cli_still_works():
    result = subprocess.run([sys.executable, "-m", "hf_fer.cli", "convert", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("usage: hf-fer convert") and "--keep-aux-branches" in result.stdout


def _actions(parser: argparse.ArgumentParser) -> list[tuple]:
    return [(type(a).__name__, tuple(a.option_strings), a.dest, a.default, a.type, tuple(a.choices) if a.choices else None, a.nargs,
             a.const, a.required, a.help) for a in parser._actions if not isinstance(a, argparse._HelpAction)]


def test_static_converter_options_match_what_the_converters_accept():
    from hf_fer.models import ARCHITECTURES
    from hf_fer_cli.parsers import ARCHITECTURE_NAMES, CONVERTER_OPTIONS

    assert tuple(sorted(ARCHITECTURES)) == ARCHITECTURE_NAMES == tuple(sorted(CONVERTER_OPTIONS))
    for arch in ARCHITECTURE_NAMES:
        real, static = argparse.ArgumentParser(), argparse.ArgumentParser()
        ARCHITECTURES[arch].converter.add_arguments(real)
        for flags, kwargs in CONVERTER_OPTIONS[arch][1]:
            static.add_argument(*flags, **kwargs)
        assert _actions(static) == _actions(real), f"hf_fer_cli.parsers.CONVERTER_OPTIONS[{arch!r}] differs from convert_{arch}_original.add_arguments"


def test_library_parses_with_the_same_parser(tmp_path):
    """`hf_fer.conversion.main` (scripts/convert_original_checkpoint.py) adds the converter's own options; same result."""
    from hf_fer.models import ARCHITECTURES
    from hf_fer_cli import build_parser
    from hf_fer_cli.parsers import convert_parser

    argv = ["--arch", "dmue", "--output", "x", "--keep-aux-branches", "--last-stride", "1"]
    light = build_parser("convert", argv).parse_args(argv)
    library = convert_parser(architectures=sorted(ARCHITECTURES), arch="dmue",
                             add_arch_arguments=ARCHITECTURES["dmue"].converter.add_arguments).parse_args(argv)
    assert vars(light) == vars(library) and light.keep_aux_branches and light.last_stride == 1


@pytest.mark.parametrize("name, module, attribute", [
    ("BENCHMARK_MODES", "hf_fer.benchmark", "MODES"),
    ("BENCHMARK_QUICK_MODES", "hf_fer.benchmark", "QUICK_MODES"),
    ("PROTOCOLS", "hf_fer.evaluation.protocols", "PROTOCOLS"),
    ("TTA_MODES", "hf_fer.evaluation.protocols", "TTA_MODES"),
    ("LABEL_MAP_MODES", "hf_fer.evaluation.runner", "LABEL_MAP_MODES"),
    ("ECE_BINS", "hf_fer.evaluation.calibration", "ECE_BINS"),
    ("MCNEMAR_METHODS", "hf_fer.evaluation.metrics", "MCNEMAR_METHODS"),
    ("BASE_MODEL_RELATIONS", "hf_fer.hub.model_card", "BASE_MODEL_RELATIONS"),
    ("EXPORT_FORMATS", "hf_fer.export", "FORMATS"),
    ("EXPORT_DEFAULT_OPSET", "hf_fer.export", "DEFAULT_OPSET"),
    ("EXPORT_INT8_MIN_AGREEMENT", "hf_fer.export", "INT8_MIN_AGREEMENT"),
    ("EXPORT_DEFAULT_INT8_OP_TYPES", "hf_fer.export", "DEFAULT_INT8_OP_TYPES"),
    ("EXPORT_CALIBRATION_METHODS", "hf_fer.export", "CALIBRATION_METHODS"),
    ("PREDICT_RUNTIMES", "hf_fer.runtime", "RUNTIMES"),
    ("PREDICT_DTYPES", "hf_fer.runtime", "DTYPES"),
    ("DATASET_CHUNK_SIZE", "hf_fer.batch_predict", "DEFAULT_CHUNK_SIZE"),
    ("DEMO_DEFAULT_RECIPE", "hf_fer.demo", "DEFAULT_RECIPE"),
    ("BENCHMARK_NAMES", "hf_fer.labels", "BENCHMARKS"),
    ("DATASET_LAYOUTS", "hf_fer.data.benchmarks", "LAYOUTS"),
])
def test_torch_free_copies_match_the_library(name, module, attribute):
    import importlib

    import hf_fer_cli.parsers as parsers

    value = getattr(importlib.import_module(module), attribute)
    value = tuple(value) if isinstance(value, (tuple, list, dict)) else value
    assert getattr(parsers, name) == value, f"hf_fer_cli.parsers.{name} must equal {module}.{attribute}"


def test_version_matches():
    import hf_fer
    import hf_fer_cli

    assert hf_fer_cli.__version__ == hf_fer.__version__


def test_benchmark_accepts_the_names_users_type():
    from hf_fer.benchmark import build_parser

    assert build_parser().parse_args(["--modes", "onnx", "eager", "ORT"]).modes == ["onnxruntime", "eager", "onnxruntime"]


def test_benchmark_errors_are_plain_text(monkeypatch):
    """A mode failing with a colourised message (as torch.compile's can) is reported without ANSI codes."""
    import test_evaluation_fixtures as fx

    import hf_fer.benchmark as benchmark

    original = benchmark._time_calls

    def failing(run, *args, **kwargs):
        if "matmul_peak" in run.__qualname__:  # the yardstick still runs
            return original(run, *args, **kwargs)
        raise RuntimeError("\x1b[31;1mcompiler\x1b[0m exploded")

    monkeypatch.setattr(benchmark, "_time_calls", failing)
    with fx.toy_architecture():
        report = benchmark.run_benchmark(["toy"], devices=["cpu"], batch_sizes=[1], modes=["eager"], warmup=0, iterations=1, image_size=16,
                                         matmul_size=64)
    (mode,) = report["results"][0]["modes"]
    assert mode["status"] == "error" and mode["reason"] == "RuntimeError: compiler exploded"
    assert "\x1b" not in benchmark.format_report(report) and "compiler exploded" in benchmark.format_report(report)


def test_no_subcommand_is_a_usage_error(capsys):
    """`hf-fer` alone prints the usage to stderr and exits 2 (it exited 0, so a script's typo went unnoticed);
    `hf-fer --help` still exits 0."""
    from hf_fer_cli import main

    assert main([]) == 2
    assert "usage: hf-fer <subcommand>" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "usage: hf-fer <subcommand>" in capsys.readouterr().out


def test_evaluate_and_compare_counts_are_checked_when_parsed(capsys):
    """--ece-bins 0, --bootstrap -1 and --max-samples 0 failed only after a whole inference pass, or not at all."""
    from hf_fer_cli import main

    for argv, message in ((["evaluate", "--ece-bins", "0"], "--ece-bins: must be at least 1, got 0"),
                          (["evaluate", "--bootstrap", "-1"], "--bootstrap: must be 0 or more, got -1"),
                          (["evaluate", "--max-samples", "0"], "--max-samples: must be at least 1, got 0"),
                          (["evaluate", "--synthetic-num-images", "x"], "expected an integer, got 'x'"),
                          (["compare", "a", "b", "--bootstrap", "-2"], "--bootstrap: must be 0 or more, got -2")):
        full = [argv[0], *argv[1:], "--model", "m", "--dataset", "synthetic"] if argv[0] == "evaluate" else [*argv, "--dataset", "synthetic"]
        assert main(full) == 2, argv
        assert message in capsys.readouterr().err, argv
