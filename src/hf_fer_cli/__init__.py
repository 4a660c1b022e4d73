"""``hf-fer``: one console command for every entry point, quick to start.

This package sits outside ``hf_fer`` on purpose: ``import hf_fer`` registers every architecture with the
transformers Auto classes, so it imports torch and transformers (seconds). Here the argument parsers
(:mod:`hf_fer_cli.parsers`) answer ``--help``, argument errors and missing files at once; the library module
of a subcommand is imported only to run it, through its ``main(argv) -> int`` (which parses the same
arguments again with the same parser), so ``hf-fer convert ...`` and ``python scripts/convert_original_checkpoint.py ...``
behave identically.
"""
from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import sys

from .parsers import PARSERS, check_sources

__version__ = "0.1.0"  # hf_fer.__version__ (checked by tests)

__all__ = ["SUBCOMMANDS", "USAGE", "build_parser", "main", "run_subcommand"]

# subcommand -> (module, function, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("hf_fer.demo", "main", "faces and expressions in a real photo with the shipped model, then a short training run"),
    "predict": ("hf_fer.predict", "main", "classify the faces in photos, folders, videos or streams"),
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
) + ("\n\noptions of every subcommand:\n  --verbose        show transformers/huggingface_hub progress bars (off by default)\n"
     "  --debug          full traceback on errors\n\nexamples:\n"
     "  hf-fer predict group.jpg\n"
     "  hf-fer convert --arch poster_v2 --checkpoint rafdb_best.pth --output poster-v2-rafdb --dataset raf-db\n"
     "  hf-fer convert --help            # lists the options of each architecture\n")


def build_parser(name: str, argv: list[str] | tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """The parser of subcommand ``name`` (``hf-fer convert``: with the options of the ``--arch`` found in ``argv``)."""
    prog = f"hf-fer {name}"
    if name == "convert":
        base = argparse.ArgumentParser(add_help=False)
        base.add_argument("--arch")
        known, _ = base.parse_known_args(list(argv))
        return PARSERS[name](prog, arch=known.arch)
    if name == "predict" and any(arg == "--dataset" or arg.startswith("--dataset=") for arg in argv):
        from .parsers import predict_dataset_parser  # sharded batch prediction (hf_fer.batch_predict)

        return predict_dataset_parser(f"{prog} --dataset")
    return PARSERS[name](prog)


@contextlib.contextmanager
def _library_progress_bars(verbose: bool):
    """transformers/huggingface_hub progress bars ("Loading weights", "Writing model shards") off unless ``verbose``;
    restored afterwards (the command may run inside a test process or a notebook)."""
    if verbose:
        yield
        return
    from transformers.utils import logging as transformers_logging

    enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # also switches huggingface_hub's off
    try:
        yield
    finally:
        if enabled:
            transformers_logging.enable_progress_bar()


def run_subcommand(name: str, argv: list[str], verbose: bool = False) -> int:
    module_name, function_name, _ = SUBCOMMANDS[name]
    try:
        module = importlib.import_module(module_name)
        entry = getattr(module, function_name)
    except (ModuleNotFoundError, AttributeError) as error:
        if isinstance(error, ModuleNotFoundError) and error.name not in (module_name, None) and not module_name.startswith(str(error.name)):
            raise
        print(f"hf-fer {name}: not implemented yet (its issue has not landed)", file=sys.stderr)
        return 2
    with _library_progress_bars(verbose):
        return int(entry(argv) or 0)


def _parse(name: str, parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``parse_args``; for ``convert``, an option of another architecture is named as such."""
    if name != "convert":
        return parser.parse_args(argv)
    from .parsers import CONVERTER_OPTIONS

    args, unknown = parser.parse_known_args(argv)
    if unknown:
        owners: dict[str, list[str]] = {}
        for arch, (_, options) in CONVERTER_OPTIONS.items():
            for flags, _ in options:
                for flag in flags:
                    owners.setdefault(flag, []).append(arch)
        hints = [f"{item} is an option of --arch {' / '.join(owners[item.split('=')[0]])}" for item in unknown if item.split("=")[0] in owners]
        parser.error(f"unrecognized arguments: {' '.join(unknown)}" + (f" ({'; '.join(hints)}, not of --arch {args.arch})" if hints else ""))
    return args


def _rank_suffix() -> str:
    """`` (rank N)`` in the processes other than rank 0 of a multi-process run, so a repeated line is seen as such."""
    import os

    rank = os.environ.get("RANK", "0")
    return f" (rank {rank})" if rank != "0" and os.environ.get("WORLD_SIZE", "1") != "1" else ""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:  # no subcommand is a usage error (exit 2, like argparse), so scripts notice it
        print(USAGE, file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"hf_fer {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        close = difflib.get_close_matches(name, SUBCOMMANDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"hf-fer: unknown subcommand {name!r}{hint}\n\n{USAGE}", file=sys.stderr)
        return 2
    parser = build_parser(name, rest)
    try:
        args = _parse(name, parser, rest)  # --help and argument errors end here, before torch is imported
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    problem = check_sources(name, args)  # a missing local file or folder: one line, still before torch
    if problem:
        print(f"hf-fer {name}: error: {problem}", file=sys.stderr)
        return 1
    try:
        return run_subcommand(name, rest, verbose=args.verbose)
    except KeyboardInterrupt:
        print("hf-fer: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exit_:
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else (print(exit_.code, file=sys.stderr) or 2)
    except Exception as error:  # one clear line unless --debug
        if args.debug:
            raise
        print(f"hf-fer {name}: error{_rank_suffix()}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
