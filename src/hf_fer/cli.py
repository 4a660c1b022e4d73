"""``hf-fer``: one console command for every entry point (each is also a ``scripts/*.py`` wrapper).

Each subcommand forwards its arguments to a library function ``main(argv) -> int``, so
``hf-fer convert ...`` and ``python scripts/convert_original_checkpoint.py ...`` behave identically.
A subcommand whose implementation has not landed yet says so and exits with status 2: nothing claims
success without doing the work.
"""
from __future__ import annotations

import importlib
import sys

# subcommand -> (module, function, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("hf_fer.demo", "main", "faces and expressions in a real photo with the shipped model, then a short training run"),
    "predict": ("hf_fer.predict", "main", "classify face images or folders with a model"),
    "convert": ("hf_fer.conversion", "main", "convert an upstream checkpoint into a transformers folder"),
    "train": ("hf_fer.training", "main", "train or fine-tune a model from a YAML recipe (use `accelerate launch` for several processes)"),
    "evaluate": ("hf_fer.evaluation", "main", "evaluate a model on a dataset split: metrics, confusion matrix"),
    "compare": ("hf_fer.evaluation.compare", "main", "compare two models on the same split: confidence intervals and McNemar's test"),
    "prepare-dataset": ("hf_fer.data.benchmarks", "main", "turn a benchmark's raw download into a datasets folder"),
    "push": ("hf_fer.hub", "main", "push a model folder to the Hub (or --to-folder) with a model card"),
    "benchmark": ("hf_fer.benchmark", "main", "measure images/s, latency, memory, parameters and FLOPs"),
    "export": ("hf_fer.export", "main", "export a model to ONNX (optionally int8) or torch.export, with a parity report"),
}

USAGE = "usage: hf-fer <subcommand> [options]   (hf-fer <subcommand> --help for details)\n\nsubcommands:\n" + "\n".join(
    f"  {name:<16} {text}" for name, (_, _, text) in SUBCOMMANDS.items()
) + "\n\nexamples:\n  hf-fer convert --arch poster_v2 --checkpoint rafdb_best.pth --output poster-v2-rafdb --dataset raf-db\n"


def run_subcommand(name: str, argv: list[str]) -> int:
    module_name, function_name, _ = SUBCOMMANDS[name]
    try:
        module = importlib.import_module(module_name)
        entry = getattr(module, function_name)
    except (ModuleNotFoundError, AttributeError) as error:
        if isinstance(error, ModuleNotFoundError) and error.name not in (module_name, None) and not module_name.startswith(str(error.name)):
            raise
        print(f"hf-fer {name}: not implemented yet (its issue has not landed)", file=sys.stderr)
        return 2
    return int(entry(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv[0] in ("-V", "--version"):
        from . import __version__

        print(f"hf_fer {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"hf-fer: unknown subcommand {name!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    debug = "--debug" in rest
    if debug:
        rest = [a for a in rest if a != "--debug"]
    try:
        return run_subcommand(name, rest)
    except KeyboardInterrupt:
        print("hf-fer: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exit_:
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else (print(exit_.code, file=sys.stderr) or 2)
    except Exception as error:  # one clear line unless --debug
        if debug:
            raise
        print(f"hf-fer {name}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
