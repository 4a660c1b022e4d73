"""``hf-fer predict``: classify face images (files and folders) with a model, in batches.

Unreadable files are skipped and reported (stderr, and as ``{"file", "error"}`` lines with ``--json``),
never silently dropped; the command fails only when no image at all could be read.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["IMAGE_EXTENSIONS", "Prediction", "collect_image_files", "predict_images", "build_parser", "main"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass
class Prediction:
    file: str
    labels: list[str] | None = None
    scores: list[float] | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        if self.error is not None:
            return {"file": self.file, "error": self.error}
        return {"file": self.file, "label": self.labels[0], "score": round(self.scores[0], 6),
                "top_k": [{"label": label, "score": round(score, 6)} for label, score in zip(self.labels, self.scores)]}


def collect_image_files(inputs: Sequence[str | os.PathLike], recursive: bool = False) -> list[Path]:
    """Expand files and folders (image extensions only inside folders; files given explicitly are always tried)."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            found = sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                print(f"warning: no image files in {path}", file=sys.stderr)
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    return files


def predict_images(
    model,
    image_processor,
    files: Iterable[str | os.PathLike],
    *,
    top_k: int = 1,
    batch_size: int = 32,
    device: torch.device | str | None = None,
) -> Iterable[Prediction]:
    """Yield one :class:`Prediction` per file, in input order; decoding errors give ``Prediction(error=...)``."""
    from .evaluation.inference import ImageLoadError, open_rgb_image, ordered_label_names

    names = ordered_label_names(model.config.id2label)
    top_k = max(1, min(top_k, len(names)))
    device = torch.device(device) if device is not None else next(model.parameters()).device
    pending: list[tuple[str, object]] = []

    def flush():
        images = [image for _, image in pending]
        with torch.inference_mode():
            pixel_values = image_processor(images=images, return_tensors="pt")["pixel_values"].to(device)
            probabilities = model(pixel_values=pixel_values).logits.float().softmax(dim=-1).cpu()
        scores, indices = probabilities.topk(top_k, dim=-1)
        results = [Prediction(file, [names[i] for i in row_indices], row_scores.tolist())
                   for (file, _), row_indices, row_scores in zip(pending, indices.tolist(), scores)]
        pending.clear()
        return results

    for file in files:
        try:
            pending.append((str(file), open_rgb_image(file)))
        except ImageLoadError as error:
            # Keep input order: emit what is pending first, then the error.
            yield from (flush() if pending else [])
            yield Prediction(str(file), error=str(error))
            continue
        if len(pending) >= batch_size:
            yield from flush()
    if pending:
        yield from flush()


def build_parser(prog: str = "hf-fer predict") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Classify aligned face crops with a FER model. Folders are expanded to their image files; "
        "unreadable files are skipped and reported.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""examples:
  hf-fer predict --model some-org/poster-v2-rafdb face.jpg
  hf-fer predict --model runs/arm faces/ --top-k 3 --batch-size 64
  hf-fer predict --model runs/arm faces/ --json > predictions.jsonl""",
    )
    parser.add_argument("--model", required=True, help="model folder or Hub id")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files and/or folders of images")
    parser.add_argument("--top-k", type=int, default=1, help="labels to show per image (default: 1)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, mps")
    parser.add_argument("--recursive", action="store_true", help="also look into sub-folders")
    parser.add_argument("--json", action="store_true", help="print one JSON object per line instead of a table")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model folders whose code is not part of hf_fer")
    return parser


def main(argv: list[str] | None = None) -> int:
    from .evaluation.inference import load_model_for_inference

    args = build_parser().parse_args(argv)
    if args.top_k < 1 or args.batch_size < 1:
        raise ValueError(f"--top-k and --batch-size must be positive, got {args.top_k} and {args.batch_size}")
    files = collect_image_files(args.inputs, recursive=args.recursive)
    if not files:
        raise FileNotFoundError("no image files to classify in " + ", ".join(args.inputs))
    loaded = load_model_for_inference(args.model, device=args.device, trust_remote_code=args.trust_remote_code)
    width = max(len(str(f)) for f in files)
    if not args.json:
        print(f"{'file':<{width}}  {'label':<12} score")
    failures = successes = 0
    for prediction in predict_images(loaded.model, loaded.image_processor, files, top_k=args.top_k,
                                     batch_size=args.batch_size, device=loaded.device):
        if prediction.error is not None:
            failures += 1
            print(f"skipped {prediction.file}: {prediction.error}", file=sys.stderr)
            if args.json:
                print(json.dumps(prediction.to_dict()))
            continue
        successes += 1
        if args.json:
            print(json.dumps(prediction.to_dict()))
        else:
            shown = "  ".join(f"{label:<12} {score:.3f}" for label, score in zip(prediction.labels, prediction.scores))
            print(f"{prediction.file:<{width}}  {shown}")
    if failures:
        print(f"skipped {failures} unreadable file(s) of {failures + successes}", file=sys.stderr)
    if not successes:
        raise ValueError(f"none of the {failures} file(s) could be read as an image")
    return 0
