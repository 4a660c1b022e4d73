"""The argument parsers of every ``hf-fer`` subcommand, built without importing torch or transformers.

``hf-fer --help``, ``hf-fer <subcommand> --help`` and argument errors answer from here at once; the
library module that does the work (``hf_fer.predict``, ``hf_fer.training``, ...) is imported only when a
command runs, and parses the same arguments with the same parser (its ``build_parser`` returns these).

Choice lists that also live in the library (benchmark modes, evaluation protocols, ...) are repeated here
as plain tuples so that no heavy module is imported; tests/test_cli_lazy.py checks that each copy equals
the library's, and that :data:`CONVERTER_OPTIONS` is exactly what each converter's ``add_arguments`` adds.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

# ------------------------------------------------------------------ copies of library constants (checked by tests)
ARCHITECTURE_NAMES = ("arm", "dacl", "dmue", "mini_xception", "poster_v2", "vt_nr")  # hf_fer.models.ARCHITECTURES
BENCHMARK_NAMES = ("raf-db", "affectnet-7", "affectnet-8", "fer2013", "ferplus", "sfew", "caer-s")  # hf_fer.labels.BENCHMARKS
DATASET_LAYOUTS = ("raf-db-list", "affectnet-csv", "affectnet-npy", "fer2013-csv", "ferplus-csv", "ferplus-folders",
                   "ferplus-jin2", "class-folders")  # hf_fer.data.benchmarks.LAYOUTS
BENCHMARK_MODES = ("eager", "channels_last", "bf16", "compile", "bf16_compile", "onnxruntime", "onnx_fused", "onnx_int8_matmul", "int8",
                   "int8_mixed")  # hf_fer.benchmark.MODES
BENCHMARK_QUICK_MODES = ("eager", "channels_last", "bf16")  # hf_fer.benchmark.QUICK_MODES
BENCHMARK_MODE_ALIASES = {"onnx": "onnxruntime", "ort": "onnxruntime", "channels-last": "channels_last", "torch.compile": "compile"}
PROTOCOLS = ("hf_fer", "paper")  # hf_fer.evaluation.protocols
TTA_MODES = ("none", "flip")  # hf_fer.evaluation.protocols
LABEL_MAP_MODES = ("auto", "strict", "none")  # hf_fer.evaluation.runner
ECE_BINS = 15  # hf_fer.evaluation.calibration
MCNEMAR_METHODS = ("exact", "continuity")  # hf_fer.evaluation.metrics
BASE_MODEL_RELATIONS = ("finetune", "adapter", "merge", "quantized")  # hf_fer.hub.model_card
PREDICT_RUNTIMES = ("auto", "eager", "compile", "onnx", "int8")  # hf_fer.runtime.RUNTIMES
PREDICT_DTYPES = ("auto", "fp32", "bf16", "fp16")  # hf_fer.runtime.DTYPES
EXPORT_FORMATS = ("onnx", "torch-export")  # hf_fer.export.FORMATS
EXPORT_DEFAULT_OPSET = 18  # hf_fer.export.DEFAULT_OPSET
EXPORT_INT8_MIN_AGREEMENT = 0.99  # hf_fer.export.INT8_MIN_AGREEMENT
EXPORT_DEFAULT_INT8_OP_TYPES = ("Conv",)  # hf_fer.export.DEFAULT_INT8_OP_TYPES
EXPORT_CALIBRATION_METHODS = ("MinMax", "Percentile", "Entropy")  # hf_fer.export.CALIBRATION_METHODS
DEMO_DEFAULT_RECIPE = "modeling_configs/arm/synthetic.yaml"  # hf_fer.demo.DEFAULT_RECIPE

# Per-architecture options of `hf-fer convert` — a static copy of each converter's ``add_arguments``
# (hf_fer/converters/convert_<arch>_original.py): (group title, [(flags, argparse keyword arguments), ...]).
CONVERTER_OPTIONS: dict[str, tuple[str, list[tuple[tuple[str, ...], dict]]]] = {
    "arm": ("ARM", [
        (("--de-albino-stride",), {"type": int, "default": 8,
         "help": "stride of the de-albino conv (8 in the released RAF-DB model; the kernel size is read from the weights)"}),
        (("--image-size",), {"type": int, "default": 224, "help": "input side the classifier is sized for (193-224 give the same model)"}),
    ]),
    "dacl": ("DACL", [
        (("--centers-seed",), {"type": int, "default": 0, "help": "seed of the fresh class centers (upstream checkpoints hold none)"}),
        (("--image-size",), {"type": int, "default": 224, "help": "input side (193-224 give the same 7×7 trunk map)"}),
    ]),
    "dmue": ("DMUE", [
        (("--keep-aux-branches",), {"action": "store_true",
         "help": "DMUE: convert a multi-branch training snapshot into the training model (auxiliary branches and "
                 "uncertainty head kept) instead of the deployed target-branch model"}),
        (("--last-stride",), {"type": int, "choices": (1, 2), "default": 2,
         "help": "DMUE: stride of stage 4 the checkpoint was trained with (upstream default 2; not visible in the weights)"}),
    ]),
    "mini_xception": ("mini-Xception", []),
    "poster_v2": ("POSTER V2", [
        (("--ir50",), {"default": None, "help": "without --checkpoint: upstream's pretrained IR-50 file (ir50.pth) for the image branch"}),
        (("--mobilefacenet",), {"default": None,
         "help": "without --checkpoint: upstream's pretrained landmark file (mobilefacenet_model_best.pth.tar)"}),
    ]),
    "vt_nr": ("VT-NR", [
        (("--image-size",), {"type": int, "default": None,
         "help": "vt_nr: model input side (default: inferred from the STN regressor width; upstream 384)"}),
    ]),
}


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """``--verbose`` and ``--debug``, handled by the ``hf-fer`` entry point itself for every subcommand."""
    group = parser.add_argument_group("output")
    group.add_argument("--verbose", action="store_true",
                       help="show the progress bars of transformers and huggingface_hub (loading weights, writing shards); off by default")
    if "--debug" not in parser._option_string_actions:
        group.add_argument("--debug", action="store_true", help="show the full traceback on errors")


def _int_at_least(minimum: int, wording: str):
    """argparse type: an integer >= ``minimum``, checked at parse time (not after a whole inference pass)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {wording}, got {value}")
        return value

    return parse


positive_int = _int_at_least(1, "at least 1")
non_negative_int = _int_at_least(0, "0 or more")


def detection_size(text: str) -> int | None:
    """argparse type for --detection-size: a long side in pixels (>= 32), or ``full`` (None: no resize)."""
    if text.strip().lower() == "full":
        return None
    return _int_at_least(32, "at least 32 (or 'full')")(text)


def _parser(prog: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)


# ------------------------------------------------------------------ one builder per subcommand
def demo_parser(prog: str = "hf-fer demo") -> argparse.ArgumentParser:
    parser = _parser(prog, "the README's main job — the real thing on a real photo, then the training loop on synthetic faces.")
    parser.add_argument("--output", default="runs/demo", help="folder for the annotated photo, faces.json and the trained model")
    parser.add_argument("--image", default=None, help="your own photo (default: scikit-image's astronaut.png)")
    parser.add_argument("--top-k", type=int, default=3, help="labels per face (default: 3)")
    parser.add_argument("--no-train", action="store_true", help="only the photo, skip the synthetic training run")
    parser.add_argument("--recipe", default=DEMO_DEFAULT_RECIPE, help=f"recipe of the training run (default: {DEMO_DEFAULT_RECIPE})")
    add_common_options(parser)
    return parser


def predict_parser(prog: str = "hf-fer predict") -> argparse.ArgumentParser:
    parser = _parser(
        prog,
        "Expressions of the faces in photos, folders, videos and streams. Faces are detected and aligned "
        "the way the model was trained, unless --no-detect (inputs are already aligned face crops) or --boxes. "
        "Unreadable files are skipped and reported.",
        """examples:
  hf-fer predict group.jpg                                   # the shipped default model, offline
  hf-fer predict photos/ --model some-org/poster-v2-rafdb --top-k 3 --output faces.csv --annotate annotated/
  hf-fer predict talk.mp4 --every-n-frames 5 --output faces.parquet --annotate annotated/
  hf-fer predict rtsp://camera/stream --fps 2 --output faces.jsonl
  hf-fer predict crops/ --no-detect --json > predictions.jsonl
  hf-fer predict photos/ --boxes my_boxes.csv               # file,xmin,ymin,xmax,ymax per face
  accelerate launch -m hf_fer.predict --dataset D --output DIR   # a whole dataset, sharded (hf-fer predict --dataset D --help)

table columns: file, face (index, or track id in videos), xmin ymin xmax ymax (box in pixels), det (detection score),
then label_K and score_K for each of the --top-k best classes (best first).""",
    )
    parser.add_argument("inputs", nargs="+", metavar="PHOTO_OR_DIR_OR_VIDEO", help="image/video files, folders, or stream URLs")
    parser.add_argument("--model", default=None, help="model folder or Hub id (default: the model shipped with hf_fer)")
    parser.add_argument("--no-detect", action="store_true", help="inputs are already aligned face crops: classify each whole image")
    parser.add_argument("--boxes", default=None, metavar="FILE", help="JSON or CSV with the faces of each file (no detection)")
    parser.add_argument("--top-k", type=int, default=1, help="labels per face (default: 1)")
    parser.add_argument("--output", default=None, metavar="FILE", help="write results to FILE: .jsonl, .csv or .parquet")
    parser.add_argument("--annotate", default=None, metavar="DIR", help="write each input with boxes, landmarks and labels drawn "
                        "(videos: an annotated video of the sampled frames), mirroring the input folders")
    parser.add_argument("--every-n-frames", type=int, default=1, help="videos: use every n-th frame (default: 1)")
    parser.add_argument("--fps", type=float, default=None, help="videos: at most this many frames per second of video")
    parser.add_argument("--smoothing", type=float, default=0.0, help="videos: EMA weight of a face's previous scores, in [0, 1)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per detector call and faces per classifier forward")
    # default: hf_fer.faces.pipeline.DEFAULT_DETECTION_SIZE (not imported: this module stays free of torch)
    parser.add_argument("--detection-size", type=detection_size, default=640, metavar="PIXELS|full",
                        help="long side the face detector works at (default 640: faces from about 1/30 of the photo's "
                        "long side); crowds in large photos need more, e.g. 1280 or full (slower)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, mps")
    parser.add_argument("--runtime", default="auto", choices=PREDICT_RUNTIMES,
                        help="how the classifier runs (default auto: an exported int8, else fp32 ONNX model next to the model "
                        "or given with --onnx; compile only on a GPU for long runs; else eager; see hf_fer.runtime)")
    parser.add_argument("--dtype", default="auto", choices=PREDICT_DTYPES,
                        help="compute precision (default auto: bf16 only where the hardware has it natively)")
    parser.add_argument("--onnx", default=None, metavar="DIR_OR_FILE", help="an `hf-fer export` folder or .onnx file for --runtime onnx/int8/auto")
    parser.add_argument("--recursive", action="store_true", help="also look into sub-folders")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image/frame instead of a table")
    parser.add_argument("--quiet", action="store_true", help="no table on stdout (use with --output)")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model folders whose code is not part of hf_fer")
    add_common_options(parser)
    return parser



DATASET_CHUNK_SIZE = 1000  # hf_fer.batch_predict.DEFAULT_CHUNK_SIZE (checked by tests)


def add_dataset_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``hf-fer predict --dataset`` (sharded batch prediction), in one place for any parser."""
    group = parser.add_argument_group("sharded batch prediction (--dataset; run under `accelerate launch` for several processes)")
    group.add_argument("--dataset", nargs="+", metavar="D", help="a datasets folder (save_to_disk / prepare-dataset), a local Hub "
                       "dataset repository, a Hub id or 'synthetic'; or image folders, image/video files and .txt lists of paths")
    group.add_argument("--split", default=None, help="split of a dataset with several")
    group.add_argument("--image-column", default=None, help="column holding the images (default: the datasets.Image column)")
    group.add_argument("--id-column", default=None, help="column written as each row's id (default: the image path, else 'row N')")
    group.add_argument("--chunk-size", type=int, default=DATASET_CHUNK_SIZE,
                       help=f"rows per chunk file: a killed run resumes at its last finished chunk (default: {DATASET_CHUNK_SIZE})")
    group.add_argument("--face-detect", action="store_true", help="detect and align faces (photos, videos); default: off, each "
                       "image is one aligned face crop, as in FER datasets")
    return parser


def predict_dataset_parser(prog: str = "hf-fer predict --dataset") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Predict every row of a dataset (or every file of folders) into Parquet shards, one per process: "
        "`accelerate launch` spreads the rows over processes, GPUs and nodes. Rerun the same command to resume.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""examples:
  hf-fer predict --dataset data/rafdb --split test --output preds/            # one process
  accelerate launch --cpu --num_processes 2 -m hf_fer.predict --dataset data/rafdb --split test --output preds/
  accelerate launch --multi_gpu --num_processes 8 -m hf_fer.predict --dataset data/affectnet --split train --output preds/
  accelerate launch -m hf_fer.predict --dataset photos/ --face-detect --output preds/   # photos: faces detected""",
    )
    add_dataset_arguments(parser)
    parser.add_argument("--output", required=True, metavar="DIR", help="output folder (shared by every node)")
    parser.add_argument("--model", default=None, help="model folder or Hub id (default: the model shipped with hf_fer)")
    parser.add_argument("--top-k", type=int, default=3, help="labels per face as label_N/score_N columns (default: 3; "
                        "the probabilities column always holds every class)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward (default: 32)")
    parser.add_argument("--detection-size", type=detection_size, default=640, metavar="PIXELS|full",
                        help="--face-detect: long side the face detector works at (default 640; crowds in large photos: "
                        "1280 or full)")
    parser.add_argument("--every-n-frames", type=int, default=1, help="videos: use every n-th frame (default: 1)")
    parser.add_argument("--fps", type=float, default=None, help="videos: at most this many frames per second of video")
    parser.add_argument("--device", default="auto", help="auto (default: this process's accelerate device), cpu, cuda, mps")
    parser.add_argument("--quiet", action="store_true", help="no per-chunk progress lines")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model folders whose code is not part of hf_fer")
    add_common_options(parser)
    return parser


def _converter_options_text() -> str:
    import textwrap

    lines = ["options of each architecture (add them after --arch ARCH; `hf-fer convert --arch ARCH --help` shows one):"]
    for arch in ARCHITECTURE_NAMES:
        title, options = CONVERTER_OPTIONS[arch]
        lines.append(f"  --arch {arch} ({title}):" + ("" if options else " none (every size is read from the checkpoint)"))
        for flags, kwargs in options:
            if kwargs.get("action") == "store_true":
                usage = ", ".join(flags)
            else:
                choices = kwargs.get("choices")
                metavar = "{" + ",".join(map(str, choices)) + "}" if choices else flags[0].lstrip("-").replace("-", "_").upper()
                usage = f"{', '.join(flags)} {metavar}"
            default = kwargs.get("default")
            text = kwargs["help"] + (f" (default: {default})" if default is not None and default is not False else "")
            lines.append(f"    {usage}")
            lines.extend(textwrap.wrap(text, width=100, initial_indent=" " * 8, subsequent_indent=" " * 8))
    return "\n".join(lines)


def convert_parser(prog: str = "hf-fer convert", arch: str | None = None, architectures=None,
                   add_arch_arguments: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.ArgumentParser:
    """``arch``: add that architecture's options (from :data:`CONVERTER_OPTIONS`, or ``add_arch_arguments`` when
    the library passes the converter's own); ``architectures``: the ``--arch`` choices (default: the shipped ones)."""
    parser = _parser(
        prog,
        "Convert an upstream FER checkpoint (as its training script saved it) into a transformers folder.",
        "examples:\n  hf-fer convert --arch poster_v2 --checkpoint rafdb_best.pth --output poster-v2-rafdb --dataset raf-db\n"
        "  python scripts/convert_original_checkpoint.py --arch dmue --checkpoint dmue.pth --output dmue-raf --dataset raf-db --keep-aux-branches\n\n"
        + _converter_options_text(),
    )
    parser.add_argument("--arch", choices=sorted(architectures or ARCHITECTURE_NAMES), required=True)
    parser.add_argument("--checkpoint", help="upstream .pth file (read with torch.load(weights_only=True)); Keras .hdf5 for mini_xception")
    parser.add_argument("--output", required=True, help="folder to write (config.json, model.safetensors, ...)")
    parser.add_argument("--num-labels", type=int, default=None, help="number of classes (default: from the head's shape)")
    parser.add_argument("--dataset", default=None, help="benchmark whose class order the checkpoint uses (sets id2label), e.g. raf-db")
    parser.add_argument("--id2label", default=None, help="explicit class names: 'a,b,c', a JSON dict, or a JSON file")
    if add_arch_arguments is not None:
        add_arch_arguments(parser)
    elif arch in CONVERTER_OPTIONS:
        title, options = CONVERTER_OPTIONS[arch]
        group = parser.add_argument_group(f"{title} (--arch {arch})")
        for flags, kwargs in options:
            group.add_argument(*flags, **kwargs)
    add_common_options(parser)
    return parser


TRAIN_EPILOG = """examples:
  hf-fer train --recipe modeling_configs/arm/synthetic.yaml --dataset synthetic --output runs/arm-demo
  accelerate launch scripts/train.py --recipe modeling_configs/poster_v2/rafdb.yaml --dataset data/rafdb --output runs/pv2
  accelerate launch --cpu --num_processes 2 scripts/train.py --recipe R --dataset D --output O   # 2 CPU processes (gloo DDP)
  hf-fer train --recipe R --dataset D --output O --resume            # continue from O/checkpoints/step_K (latest)
  hf-fer train --recipe R --dataset D --output O --resume --force    # after a kill: break the dead run's lock and continue
  hf-fer train --recipe R --dataset D --output O --set training.epochs=3 --set training.optimizer.lr=1e-4
"""


def train_parser(prog: str = "hf-fer train") -> argparse.ArgumentParser:
    parser = _parser(prog, "Train or fine-tune a FER model from a YAML recipe with Accelerate.", TRAIN_EPILOG)
    parser.add_argument("--recipe", required=True, help="YAML recipe, e.g. modeling_configs/<arch>/<dataset>.yaml")
    parser.add_argument("--dataset", required=True, help="'synthetic', a prepare-dataset/save_to_disk folder, an imagefolder directory or a Hub dataset id")
    parser.add_argument("--output", required=True, help="output folder: the best model lands here, last model in OUTPUT/last")
    parser.add_argument("--resume", nargs="?", const="latest", default=None, help="resume from the latest checkpoint in OUTPUT (or a given checkpoint folder)")
    parser.add_argument("--force", action="store_true", help="take over OUTPUT: break a stale lock (its process must be gone) and, "
                        "without --resume, start over a run that did not finish (its checkpoints are deleted)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps (overrides the recipe's epochs)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value (dotted key, YAML value)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--no-sample-predictions", action="store_true", help="do not reload the model and classify a few new faces at the end")
    add_common_options(parser)
    return parser


def evaluate_parser(prog: str = "hf-fer evaluate") -> argparse.ArgumentParser:
    parser = _parser(
        prog,
        "Evaluate a FER model on a dataset split: accuracy, mean class accuracy, macro-F1, per-class "
        "precision/recall, confusion matrix (eval_results.json + PNG plots).",
        """examples:
  hf-fer evaluate --model runs/pv2 --dataset data/rafdb --split test
  hf-fer evaluate --model poster-v2-rafdb --dataset data/fer2013 --label-map auto --output-dir eval/rafdb-on-fer2013
  hf-fer evaluate --model runs/arm --dataset synthetic --batch-size 32 --device cpu
  hf-fer evaluate --model arm-rafdb --dataset data/rafdb --protocol paper          # upstream's batch-64 evaluation
  hf-fer evaluate --model runs/pv2 --dataset data/rafdb --tta flip --fit-temperature

--dataset takes a prepare-dataset/save_to_disk folder, an imagefolder directory, a Hub dataset id or
'synthetic'. With --label-map auto, classes are matched by name (cross-dataset evaluation); classes that
cannot be mapped are reported, and test images of classes the model lacks are dropped (--keep-unmapped
counts them as errors instead).""",
    )
    parser.add_argument("--model", required=True, help="model folder or Hub id")
    parser.add_argument("--dataset", required=True, help="dataset folder, imagefolder directory, Hub id, or 'synthetic'")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument("--label-map", default="auto", choices=LABEL_MAP_MODES, help="how model classes are matched to dataset classes (default: auto)")
    parser.add_argument("--keep-unmapped", action="store_true", help="keep images of classes the model lacks (counted as errors)")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, mps")
    parser.add_argument("--output-dir", default=None, help="where eval_results.json and plots go (default: the model folder, or ./eval_results)")
    parser.add_argument("--dataset-name", default=None, help="name shown in the results and model card (default: the folder name)")
    parser.add_argument("--benchmark", default=None, help="benchmark the data is, e.g. raf-db (default: from prepare-dataset's report)")
    parser.add_argument("--max-samples", type=positive_int, default=None, help="evaluate only the first N images")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model folders whose code is not part of hf_fer")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    parser.add_argument("--protocol", default="hf_fer", choices=PROTOCOLS,
                        help="hf_fer (default): batch-independent scores; paper: the upstream evaluation (e.g. ARM's batches of 64)")
    parser.add_argument("--tta", default="none", choices=TTA_MODES, help="test-time augmentation, reported as a separate row (default: none)")
    parser.add_argument("--bootstrap", type=non_negative_int, default=1000, help="bootstrap resamples for the 95%% confidence intervals (0: none; default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    parser.add_argument("--ece-bins", type=positive_int, default=ECE_BINS, help=f"confidence bins of the ECE (default {ECE_BINS})")
    parser.add_argument("--alignment", default=None, help="how the dataset's faces were aligned/cropped, recorded in the results")
    parser.add_argument("--fit-temperature", action="store_true",
                        help="first fit temperature scaling on --calibration-split and store it in the model's config.json")
    parser.add_argument("--calibration-split", default="validation", help="split used by --fit-temperature (default: validation)")
    synthetic = parser.add_argument_group("--dataset synthetic (default: the faces the model was trained on, from its training_info.json)")
    synthetic.add_argument("--synthetic-size", type=positive_int, default=None, help="face size in pixels")
    synthetic.add_argument("--synthetic-difficulty", default=None, choices=("easy", "standard"), help="nuisance level")
    synthetic.add_argument("--synthetic-num-images", type=positive_int, default=None, help="number of faces")
    synthetic.add_argument("--synthetic-seed", type=int, default=None, help="base seed (the split adds its offset)")
    parser.add_argument("--attention-plot", action="store_true",
                        help="DACL: also write the mean attention-weight vector per true class (attention_weights.png/.json)")
    add_common_options(parser)
    return parser


def compare_parser(prog: str = "hf-fer compare") -> argparse.ArgumentParser:
    parser = _parser(
        prog,
        "Compare two FER models on the same split: each model's metrics with bootstrap 95% intervals, the paired "
        "interval of the accuracy difference and McNemar's test.",
        """examples:
  hf-fer compare runs/arm-a runs/arm-b --dataset synthetic
  hf-fer compare poster-v2-rafdb runs/pv2 --dataset data/rafdb --mcnemar continuity --output compare.json""",
    )
    parser.add_argument("model_a", help="first model folder or Hub id")
    parser.add_argument("model_b", help="second model folder or Hub id")
    parser.add_argument("--dataset", required=True, help="dataset folder, imagefolder directory, Hub id, or 'synthetic'")
    parser.add_argument("--split", default="test")
    parser.add_argument("--protocol", default="hf_fer", choices=PROTOCOLS)
    parser.add_argument("--mcnemar", default="exact", choices=MCNEMAR_METHODS,
                        help="exact binomial test (default) or chi-square with continuity correction")
    parser.add_argument("--bootstrap", type=non_negative_int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label-map", default="auto", choices=("auto", "strict", "none"))
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-samples", type=positive_int, default=None)
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.add_argument("--output", default=None, help="also write the comparison as JSON to this file")
    parser.add_argument("--synthetic-size", type=positive_int, default=None, help="--dataset synthetic: face size (default: model A's training faces)")
    parser.add_argument("--synthetic-difficulty", default=None, choices=("easy", "standard"))
    parser.add_argument("--synthetic-num-images", type=positive_int, default=None)
    parser.add_argument("--synthetic-seed", type=int, default=None)
    add_common_options(parser)
    return parser


def prepare_dataset_parser(prog: str = "hf-fer prepare-dataset") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Convert a raw FER benchmark download into a datasets.DatasetDict (save_to_disk), validating every image.",
    )
    parser.add_argument("--benchmark", required=True, help=f"benchmark: {', '.join(BENCHMARK_NAMES)} (AffectNet: affectnet-7 or affectnet-8)")
    parser.add_argument("--raw-dir", required=True, help="directory of the raw download")
    parser.add_argument("--output", required=True, help="output directory (save_to_disk); validation_report.json is written there too")
    parser.add_argument("--layout", default="auto", choices=["auto", *DATASET_LAYOUTS], help="raw layout (default: detect)")
    parser.add_argument("--push-to-hub", metavar="REPO", default=None, help="also push the DatasetDict to this Hub dataset repo")
    parser.add_argument("--private", action="store_true", default=None, help="create the Hub repo as private")
    parser.add_argument("--strict", action="store_true", help="fail (exit 1, dataset not written) on any validation issue")
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset previously written to --output")
    parser.add_argument("--align", nargs="?", const="auto", default=None, metavar="ALIGNMENT",
                        help="align the faces (landmarks the benchmark ships: RAF-DB Annotation/manual, AffectNet's 68 points; "
                        "else the RetinaFace detector). ALIGNMENT: raf-db, arcface-112, arcface-224, a face_alignment JSON file, "
                        "or a model whose processor's face_alignment to match (default: raf-db for RAF-DB, arcface-112 otherwise)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    add_common_options(parser)
    return parser


def push_parser(prog: str = "hf-fer push") -> argparse.ArgumentParser:
    parser = _parser(
        prog,
        "Publish a model folder to the Hugging Face Hub with a model card (results from eval_results.json, "
        "label order, preprocessing, citation, licence), or write exactly what would be uploaded to a folder.",
        """examples:
  hf-fer push --model poster-v2-rafdb --repo-id some-org/poster-v2-rafdb --private
  hf-fer push --model runs/arm --repo-id me/arm-synthetic --to-folder upload/ --eval-results runs/arm/eval_results.json
  hf-fer push --model converted/dacl --repo-id me/dacl-rafdb --converted-from dacl_rafdb.pth --training-dataset raf-db

The card template is the architecture's own (hf_fer/hub/templates/<arch>.md, installed with the package). Without eval results the card has no model-index (nothing is invented).""",
    )
    parser.add_argument("--model", required=True, help="model folder (save_pretrained output)")
    parser.add_argument("--repo-id", required=True, help="Hub repository, e.g. some-org/poster-v2-rafdb")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--to-folder", default=None, help="write the upload into this folder instead of uploading")
    parser.add_argument("--overwrite", action="store_true", help="with --to-folder: replace a non-empty folder")
    parser.add_argument("--eval-results", nargs="+", default=None, help="eval_results.json files (default: the model folder's)")
    parser.add_argument("--model-name", default=None, help="title of the card (default: the repo name)")
    parser.add_argument("--template", default=None, help="card template (default: the architecture's own, hf_fer/hub/templates/<arch>.md)")
    parser.add_argument("--training-dataset", default=None, help="benchmark/dataset the weights were trained on (sets the weights' licence)")
    parser.add_argument("--converted-from", default=None, help="upstream checkpoint the weights were converted from")
    parser.add_argument("--base-model", default=None, help="Hub id of the model this one was fine-tuned from (or converted from)")
    parser.add_argument("--base-model-relation", default=None, choices=BASE_MODEL_RELATIONS,
                        help="how it relates to --base-model (default: finetune for trained models, none for conversions)")
    parser.add_argument("--commit-message", default=None)
    parser.add_argument("--revision", default=None, help="branch to push to")
    add_common_options(parser)
    return parser


def benchmark_mode(text: str) -> str:
    """``--modes`` value: the names a user would type (``onnx``) map to the mode (``onnxruntime``)."""
    return BENCHMARK_MODE_ALIASES.get(text.lower(), text.lower())


def benchmark_parser(prog: str = "hf-fer benchmark", modes=BENCHMARK_MODES, quick_modes=BENCHMARK_QUICK_MODES) -> argparse.ArgumentParser:
    aliases = ", ".join(f"{alias} = {mode}" for alias, mode in BENCHMARK_MODE_ALIASES.items() if mode in modes)
    parser = _parser(
        prog,
        "Measure images/s, latency, peak memory, parameters and FLOPs of each architecture (default configs, "
        "random weights, nothing downloaded), with the machine's matmul peak as the yardstick.",
        f"""examples:
  hf-fer benchmark --quick
  hf-fer benchmark --arch poster_v2 arm --batch-sizes 1 32 --devices cpu cuda --json bench.json
  hf-fer benchmark --arch arm --modes eager compile --iterations 50
  hf-fer benchmark --train --batch-sizes 8 32          # training images/s per architecture

modes: {', '.join(modes)} (bf16 = autocast; labelled "emulated", without % of peak, where the hardware has no bf16
units; bf16_compile = autocast inside torch.compile, CUDA graphs on a GPU; onnxruntime = ONNX Runtime fp32; int8 =
ONNX Runtime static int8 as `hf-fer export --quantize int8`, CPU; int8_mixed = that plus dynamic int8 MatMuls (`--quantize int8-mixed`); also accepted: {aliases}). Timings: median / min /
max over the timed calls; each mode also reports its ratio to fp32 eager of the same run, top-1 agreement with it on
synthetic faces, CPU time per call and the process peak RSS. On a GPU, batch 256 is added (the GPU branch is untested
by its authors).
--quick: batch size 1, 1 warm-up + 3 timed runs, modes {', '.join(quick_modes)} unless --modes is given.
FLOPs count 2 per multiply-add (torch.utils.flop_counter); papers' "FLOPs" are usually multiply-adds (GMACs column).""",
    )
    parser.add_argument("--arch", nargs="+", default=None, help="architectures (default: all installed)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=None, help="default: 1 32, plus 256 on a GPU (1 with --quick)")
    parser.add_argument("--devices", nargs="+", default=["auto"], help="auto (default: cuda if available, else cpu), cpu, cuda, ...")
    parser.add_argument("--modes", nargs="+", default=None, choices=modes, type=benchmark_mode, metavar="MODE",
                        help=f"execution modes: {', '.join(modes)} (default: all; onnx = onnxruntime)")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=None, help="timed calls per mode (default 10, 3 with --quick)")
    parser.add_argument("--min-seconds", type=float, default=None,
                        help="keep timing a mode until its timed calls add up to this (default 2, 0 with --quick)")
    parser.add_argument("--image-size", type=int, default=None, help="override the input size (default: the image processor's)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (see below)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--train", action="store_true", help="measure training images/s (forward + loss + backward + AdamW step) instead of inference")
    parser.add_argument("--pipeline", action="store_true", help="the face pipeline instead: per-stage ms for a photo with 5 faces "
                        "and 32 photos batched (2 threads unless --threads), overhead %%, CPU flags, and video peak memory")
    parser.add_argument("--photo", default=None, help="--pipeline: the photo (default: tests/fixtures/faces/sample5.jpg)")
    parser.add_argument("--model", default=None, help="--pipeline: the classifier (default: the shipped model)")
    add_common_options(parser)
    return parser


def export_parser(prog: str = "hf-fer export") -> argparse.ArgumentParser:
    parser = _parser(
        prog,
        "Export a model to ONNX (optionally int8) or torch.export, with a parity report beside it.",
        "examples:\n"
        "  hf-fer export --model runs/arm --format onnx --output arm-onnx\n"
        "  hf-fer export --model runs/arm --format onnx --quantize int8 --calibration-dataset my_faces/ --output arm-int8\n"
        "then: from hf_fer.onnx import OnnxClassifier; OnnxClassifier('arm-int8')('face.jpg')\n",
    )
    parser.add_argument("--model", required=True, help="model folder or Hub id")
    parser.add_argument("--format", choices=EXPORT_FORMATS, default="onnx")
    parser.add_argument("--quantize", choices=["int8", "int8-dynamic", "int8-mixed"], default=None,
                        help="also write model_int8.onnx: int8 = ONNX Runtime static QDQ of the convolutions (CNNs), "
                             "calibrated; int8-dynamic = dynamic int8 of the linear layers' MatMuls (transformers: VT-NR), "
                             "no calibration set; int8-mixed = both (convolutions and transformer parts: POSTER V2)")
    parser.add_argument("--calibration-dataset", default=None,
                        help="images for int8 calibration: a folder of images, a saved datasets folder, a Hub dataset id, or 'synthetic' (default)")
    parser.add_argument("--num-calibration-images", type=int, default=128)
    parser.add_argument("--parity-dataset", default=None, help="images for the parity check (default: synthetic faces)")
    parser.add_argument("--num-parity-images", type=int, default=128)
    parser.add_argument("--int8-ops", nargs="+", default=list(EXPORT_DEFAULT_INT8_OP_TYPES),
                        help="ONNX operators to quantize (default: Conv; 'all' = every one ONNX Runtime supports)")
    parser.add_argument("--calibration-method", choices=EXPORT_CALIBRATION_METHODS, default="MinMax",
                        help="how int8 activation ranges are chosen (ONNX Runtime calibrators; default MinMax)")
    parser.add_argument("--min-agreement", type=float, default=EXPORT_INT8_MIN_AGREEMENT, help="required int8 top-1 agreement (default 0.99)")
    parser.add_argument("--opset", type=int, default=EXPORT_DEFAULT_OPSET)
    parser.add_argument("--optimize", action="store_true",
                        help="fuse the transformer parts with ONNX Runtime's optimizer (SkipLayerNormalization, BiasGelu, ...; "
                             "the file then runs in ONNX Runtime only)")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    add_common_options(parser)
    return parser


# ------------------------------------------------------------------ local paths vs Hub ids, checked before anything loads
def looks_like_a_path(source: str) -> bool:
    """True for arguments that can only mean a local file or folder (a Hub id is ``name`` or ``org/name``).

    ``runs/typo`` is also a valid Hub id, but when ``runs/`` is a local folder the user meant a path.
    """
    if source.startswith((".", "/", "~")) or "\\" in source or source.count("/") > 1 or source.endswith("/") or (os.sep != "/" and os.sep in source):
        return True
    parent = Path(source).parent
    return str(parent) not in ("", ".") and parent.is_dir()


def source_problem(flag: str, value: str | None, kind: str) -> str | None:
    """A one-line message when ``value`` (given as ``flag``) names nothing, else ``None``.

    kind: ``"model"`` / ``"dataset"`` (a local folder or a Hub id; ``dataset`` also takes ``synthetic``),
    ``"folder"`` / ``"file"`` / ``"path"`` (local only; ``path``: a file or a folder).
    """
    if value is None or (kind == "dataset" and value == "synthetic"):
        return None
    path = Path(value).expanduser()
    if kind == "path":
        return None if path.exists() else f"no such file or folder: {value} ({flag} does not exist)"
    if kind == "file":
        if path.is_dir():
            return f"{flag} {value}: is a folder, expected a file"
        return None if path.is_file() else f"no such file: {value} ({flag} does not exist)"
    if path.exists():
        if kind in ("folder", "model") and not path.is_dir():
            return f"{flag} {value}: is a file, expected a folder" + (" (a save_pretrained model folder)" if kind == "model" else "")
        return None
    if kind == "folder":
        return f"no such folder: {value} ({flag} does not exist)"
    if looks_like_a_path(value):
        parent = path.parent
        why = f"{parent}/ is a local folder" if str(parent) not in ("", ".") and parent.is_dir() else "it is written as a path"
        return f"no such folder: {value} ({flag}: read as a local path since {why}; a Hub {kind} id is NAME or ORG/NAME)"
    return None  # a Hub id: the loader says whether the Hub (or its cache, offline) has it


# subcommand -> [(flag shown, attribute, kind)]
SOURCES: dict[str, list[tuple[str, str, str]]] = {
    "demo": [("--image", "image", "file")],
    "predict": [("--model", "model", "model"), ("--boxes", "boxes", "file"), ("--onnx", "onnx", "path")],
    "convert": [("--checkpoint", "checkpoint", "file"), ("--ir50", "ir50", "file"), ("--mobilefacenet", "mobilefacenet", "file")],
    "train": [("--recipe", "recipe", "file")],  # --dataset: checked after the recipe, which is validated first
    "evaluate": [("--model", "model", "model"), ("--dataset", "dataset", "dataset")],
    "compare": [("model_a", "model_a", "model"), ("model_b", "model_b", "model"), ("--dataset", "dataset", "dataset")],
    # prepare-dataset: its own errors (a missing --raw-dir included) exit with status 2, as documented there
    "push": [("--model", "model", "folder")],
    "benchmark": [("--model", "model", "model"), ("--photo", "photo", "file")],
    "export": [("--model", "model", "model"), ("--calibration-dataset", "calibration_dataset", "dataset"),
               ("--parity-dataset", "parity_dataset", "dataset")],
}


def check_sources(name: str, args: argparse.Namespace) -> str | None:
    """The first missing local file/folder among ``name``'s path arguments, as a message; ``None`` if all are there."""
    for flag, attribute, kind in SOURCES.get(name, []):
        problem = source_problem(flag, getattr(args, attribute, None), kind)
        if problem:
            return problem
    return None


PARSERS: dict[str, Callable[..., argparse.ArgumentParser]] = {
    "demo": demo_parser, "predict": predict_parser, "convert": convert_parser, "train": train_parser,
    "evaluate": evaluate_parser, "compare": compare_parser, "prepare-dataset": prepare_dataset_parser,
    "push": push_parser, "benchmark": benchmark_parser, "export": export_parser,
}
