"""``hf-fer predict``: expressions of the faces in photos, folders, videos and streams.

Photos: faces are detected (the shipped RetinaFace), aligned the way the model was trained (its processor's
``face_alignment``) and classified; ``--no-detect`` treats each image as one aligned face crop, ``--boxes FILE``
uses faces you already have. Videos and streams (a file PyAV opens, ``/dev/video0``, ``rtsp://...``): sampled with
``--every-n-frames`` / ``--fps``, faces tracked (``id``), in bounded memory. With no ``--model`` the model shipped
inside the package is used, offline.

Unreadable files are reported (stderr, and as ``{"file", "error"}`` records) and skipped; the run continues and
fails only when nothing at all could be read.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from .image_io import IMAGE_EXTENSIONS  # re-exported: part of this module's API

__all__ = ["IMAGE_EXTENSIONS", "collect_inputs", "collect_image_files", "read_boxes_file", "predict_records",
           "build_parser", "main"]


def collect_inputs(inputs: Sequence[str | os.PathLike], recursive: bool = False) -> list[str]:
    """Expand folders to their image and video files (sorted); files and streams given explicitly are always tried."""
    from .faces.video import STREAM_PREFIXES, VIDEO_EXTENSIONS

    found: list[str] = []
    for item in inputs:
        text = str(item)
        if text.startswith(STREAM_PREFIXES):
            found.append(text)
            continue
        path = Path(text).expanduser()
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            files = sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
            if not files:
                print(f"warning: no image or video files in {path}", file=sys.stderr)
            found.extend(str(p) for p in files)
        elif path.exists():
            found.append(str(path))
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    return found


def collect_image_files(inputs: Sequence[str | os.PathLike], recursive: bool = False) -> list[Path]:
    """Kept for callers of the old API: the image (non-video) inputs as paths."""
    from .faces.video import is_video_source

    return [Path(p) for p in collect_inputs(inputs, recursive) if not is_video_source(p)]


def read_boxes_file(path: str | os.PathLike) -> dict[str, dict]:
    """Faces you already have, per file: ``{file: {"boxes": [[x1, y1, x2, y2], ...], "landmarks": [...] or None}}``.

    JSON: ``{"photo.jpg": [[x1, y1, x2, y2], ...]}`` or ``{"photo.jpg": [{"box": [..] or {"xmin",..}, "landmarks":
    [[x, y] * 5]}, ...]}``. CSV: columns ``file, xmin, ymin, xmax, ymax`` (one row per face), optionally the ten
    landmark columns ``right_eye_x, right_eye_y, ... left_mouth_y``. Files match by path as given or by name.
    """
    from .faces.video import LANDMARK_NAMES

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--boxes {path}: no such file")
    table: dict[str, dict] = {}
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = {"file", "xmin", "ymin", "xmax", "ymax"} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"--boxes {path}: missing column(s) {sorted(missing)} (expected file, xmin, ymin, xmax, ymax)")
            landmark_columns = [f"{name}_{axis}" for name in LANDMARK_NAMES for axis in "xy"]
            has_landmarks = set(landmark_columns) <= set(reader.fieldnames)
            for line, row in enumerate(reader, start=2):
                try:
                    box = [float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax")]
                    points = [[float(row[f"{n}_x"]), float(row[f"{n}_y"])] for n in LANDMARK_NAMES] if has_landmarks else None
                except (TypeError, ValueError) as error:
                    raise ValueError(f"--boxes {path}, line {line}: {error}") from None
                entry = table.setdefault(row["file"], {"boxes": [], "landmarks": [] if has_landmarks else None})
                entry["boxes"].append(box)
                if has_landmarks:
                    entry["landmarks"].append(points)
        return table
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"--boxes {path}: not valid JSON ({error}); expected {{file: [[x1, y1, x2, y2], ...]}} or a .csv") from None
    if not isinstance(data, dict):
        raise ValueError(f"--boxes {path}: expected a JSON object {{file: faces}}, got {type(data).__name__}")
    for name, faces in data.items():
        if not isinstance(faces, list):
            raise ValueError(f"--boxes {path}: entry {name!r} must be a list of faces, got {type(faces).__name__}")
        boxes, landmarks = [], []
        for face in faces:
            if isinstance(face, dict):
                box = face.get("box")
                boxes.append([box["xmin"], box["ymin"], box["xmax"], box["ymax"]] if isinstance(box, dict) else box)
                landmarks.append(face.get("landmarks"))
            else:
                boxes.append(face)
                landmarks.append(None)
        with_points = bool(landmarks) and all(points is not None for points in landmarks)
        table[name] = {"boxes": boxes, "landmarks": landmarks if with_points else None}
    return table


def _boxes_for(table: dict[str, dict] | None, file: str) -> dict | None:
    if table is None:
        return None
    return table.get(file) or table.get(Path(file).name)


def predict_records(pipe, files: Sequence[str], *, batch_size: int, top_k: int | None, detect: bool = True,
                    boxes: dict[str, dict] | None = None, every_n_frames: int = 1, fps: float | None = None,
                    smoothing: float = 0.0, keep_images: bool = False) -> Iterator[dict]:
    """One record per photo (``{"file", "faces"}``) or sampled video frame (plus ``"frame"``, ``"time"``, face
    ``"id"``); ``{"file", "error"}`` for anything that could not be read. Photos go through the pipeline in chunks
    of ``batch_size``; with ``boxes``, photos missing from the table are reported, not guessed."""
    from .faces.video import is_video_source, predict_video

    pending: list[str] = []

    def flush():
        chunk_boxes = chunk_landmarks = None
        if boxes is not None:
            entries = [_boxes_for(boxes, f) or {"boxes": [], "landmarks": None} for f in pending]
            chunk_boxes = [e["boxes"] for e in entries]
            chunk_landmarks = [e["landmarks"] for e in entries]
            if any(e is not None for e in chunk_landmarks):
                chunk_landmarks = [e if e is not None else None for e in chunk_landmarks]
            else:
                chunk_landmarks = None
        results = pipe.process_images(pending, boxes=chunk_boxes, landmarks=chunk_landmarks, detect=detect,
                                      batch_size=batch_size, keep_images=keep_images, names=list(pending))
        records = []
        for file, result in zip(pending, results):
            if result.error is not None:
                records.append({"file": file, "error": result.error})
                continue
            record = {"file": file, "faces": pipe.format_result(result, top_k=top_k)}
            if keep_images:
                record["image"] = result.image
            records.append(record)
        pending.clear()
        return records

    for file in files:
        if is_video_source(file):
            yield from flush()
            try:
                frames = 0
                for frames, record in enumerate(predict_video(pipe, file, every_n_frames=every_n_frames, fps=fps,
                                                              batch_size=batch_size, top_k=top_k, detect=detect,
                                                              smoothing=smoothing, return_images=keep_images), 1):
                    yield record
                if not frames:  # opened, but not one frame decoded: say so rather than print nothing
                    yield {"file": file, "error": f"{file}: no video frame could be decoded"}
            except Exception as error:  # noqa: BLE001 — one bad video never sinks the run
                import av

                if not isinstance(error, (ValueError, OSError, av.FFmpegError)):
                    raise
                yield {"file": file, "error": str(error) if file in str(error) else f"{file}: {error}"}
            continue
        if boxes is not None and _boxes_for(boxes, file) is None:
            yield from flush()
            yield {"file": file, "error": f"{file}: not in the --boxes file"}
            continue
        pending.append(file)
        if len(pending) >= batch_size:
            yield from flush()
    yield from flush()


def build_parser(prog: str = "hf-fer predict") -> argparse.ArgumentParser:
    """The parser lives in the torch-free :mod:`hf_fer_cli.parsers`, so ``--help`` and argument errors answer at once."""
    from hf_fer_cli.parsers import predict_parser

    return predict_parser(prog)


def _table_columns(files: Sequence[str], label_names: Sequence[str], top_k: int) -> list[tuple[str, int, bool]]:
    """(header, width, left-aligned) of each table column: every column named, every row under its header."""
    from .faces.video import is_video_source

    file_width = max([4, *(len(f) + (8 if is_video_source(f) else 0) for f in files)])
    label_width = max([7, *(len(str(n)) for n in label_names)])
    columns = [("file", file_width, True), ("face", 4, False), *((k, 5, False) for k in ("xmin", "ymin", "xmax", "ymax")), ("det", 5, False)]
    for rank in range(1, top_k + 1):
        columns += [(f"label_{rank}", label_width, True), (f"score_{rank}", 7, False)]
    return columns


def _format_row(cells: Sequence[str], columns: Sequence[tuple[str, int, bool]]) -> str:
    parts = [cell.ljust(width) if left else cell.rjust(width) for cell, (_, width, left) in zip(cells, columns)]
    return "  ".join(parts + list(cells[len(columns):])).rstrip()


def _table_rows(record: dict, top_k: int) -> list[list[str]]:
    name = record["file"] if "frame" not in record else f"{record['file']}@{record['frame']}"
    rows = []
    for number, face in enumerate(record.get("faces") or []):
        box = face["box"]
        cells = [name, str(face.get("id", number)), *(f"{box[k]:.0f}" for k in ("xmin", "ymin", "xmax", "ymax")),
                 "-" if face["detection_score"] is None else f"{face['detection_score']:.3f}"]
        for entry in face["labels"][:top_k]:
            cells += [entry["label"], f"{entry['score']:.3f}"]
        rows.append(cells)
    if not rows and "error" not in record:
        rows.append([name, "-", "no face found"])
    return rows


#: Extensions an annotated photo keeps (Pillow writes them in RGB); any other input gets ``<name>.png``.
_ANNOTATION_FORMATS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _annotation_root(files: Sequence[str]) -> str | None:
    """The deepest folder holding every local input: annotated files mirror the paths below it, so two photos with
    the same name in different folders (``--recursive``) never overwrite each other's drawing."""
    folders = [os.path.dirname(os.path.abspath(f)) for f in files if "://" not in f and not f.startswith("/dev/")]
    try:
        return os.path.commonpath(folders) if folders else None
    except ValueError:  # paths on different drives (Windows)
        return None


def _annotated_path(folder: Path, file: str, video: bool, root: str | None = None) -> Path:
    if "://" in file or file.startswith("/dev/") or root is None:
        relative = Path(Path(file.split("://")[-1]).name or "stream")
    else:
        relative = Path(os.path.relpath(os.path.abspath(file), root))
    if video:
        return folder / relative.with_suffix(".mp4")
    if relative.suffix.lower() not in _ANNOTATION_FORMATS:  # no extension, or a format that cannot hold the drawing
        relative = relative.with_name(relative.name + ".png")
    return folder / relative


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(arg == "--dataset" or arg.startswith("--dataset=") for arg in argv):  # sharded batch prediction
        from .batch_predict import main as batch_main

        return batch_main(argv)
    args = build_parser().parse_args(argv)
    if args.top_k < 1 or args.batch_size < 1 or args.every_n_frames < 1:
        raise ValueError(f"--top-k, --batch-size and --every-n-frames must be positive, got {args.top_k}, {args.batch_size}, {args.every_n_frames}")
    if args.fps is not None and not args.fps > 0:  # checked here, not per video: an argument error is not a bad file
        raise ValueError(f"--fps must be positive, got {args.fps}")
    if not 0.0 <= args.smoothing < 1.0:
        raise ValueError(f"--smoothing must be in [0, 1), got {args.smoothing}")
    if args.no_detect and args.boxes:
        raise ValueError("--no-detect and --boxes exclude each other (--boxes already says where the faces are)")
    files = collect_inputs(args.inputs, recursive=args.recursive)
    if not files:
        raise FileNotFoundError("nothing to classify in " + ", ".join(args.inputs))
    boxes = read_boxes_file(args.boxes) if args.boxes else None

    from .evaluation.inference import load_model_for_inference
    from .faces.pipeline import TASK, FacialExpressionRecognitionPipeline
    from .faces.video import (ResultWriter, VideoAnnotator, draw_faces, is_video_source, save_image_atomically,
                              video_frame_rate)

    model = args.model
    if model is None:
        from . import pretrained_path

        model = str(pretrained_path())
        model_note = f"the shipped default model ({Path(model).name}, offline; --model to choose another)"
    else:
        model_note = f"model {model}"
    faces_note = ("no detection: each image is one aligned face crop" if args.no_detect
                  else f"faces from {args.boxes}" if boxes is not None else
                  "faces detected with the shipped RetinaFace at " + (f"a {args.detection_size} px long side" if args.detection_size else "full size"))

    loaded = load_model_for_inference(model, device=args.device, trust_remote_code=args.trust_remote_code)
    from .runtime import apply_runtime

    choice = apply_runtime(loaded.model, args.runtime, args.dtype, model_path=model, onnx_path=args.onnx,
                           batch_size=args.batch_size, expected_images=len(files))
    pipeline_logger = logging.getLogger(FacialExpressionRecognitionPipeline.__module__)
    level = pipeline_logger.level
    pipeline_logger.setLevel(logging.ERROR)  # its batch-mode warning is part of the one line below
    try:
        pipe = FacialExpressionRecognitionPipeline(model=loaded.model, image_processor=loaded.image_processor,
                                                   device=loaded.device, task=TASK, detection_size=args.detection_size)
    finally:
        pipeline_logger.setLevel(level)
    batch_note = ("; batch-dependent model (affinity_mode='batch'): each face is classified alone, so scores never depend "
                  "on the other faces" if pipe.classify_alone else "")
    print(f"hf-fer predict: {model_note}; {faces_note}{batch_note}", file=sys.stderr)
    print(choice.describe(), file=sys.stderr)  # "runtime eager, dtype fp32: <why>", after the start line
    top_k = min(args.top_k, len(pipe.label_names))
    columns = _table_columns(files, pipe.label_names, top_k)
    writer = ResultWriter(args.output, top_k=top_k) if args.output else None
    annotate = Path(args.annotate) if args.annotate else None
    root = _annotation_root(files)
    annotators: dict[str, VideoAnnotator] = {}

    if not args.json and not args.quiet:
        print(_format_row([name for name, _, _ in columns], columns))
    failures = successes = faces = 0
    try:
        for record in predict_records(pipe, files, batch_size=args.batch_size, top_k=top_k, detect=not args.no_detect,
                                      boxes=boxes, every_n_frames=args.every_n_frames, fps=args.fps,
                                      smoothing=args.smoothing, keep_images=annotate is not None):
            image = record.pop("image", None)
            if "error" in record:
                failures += 1
                print(f"skipped {record['file']}: {record['error']}", file=sys.stderr)
            else:
                successes += 1
                faces += len(record["faces"])
            if writer is not None:
                writer.write(record)
            if args.json:
                print(json.dumps(record))
            elif not args.quiet:
                for cells in _table_rows(record, top_k):
                    print(_format_row(cells, columns))
            if annotate is not None and image is not None:
                drawn = draw_faces(image, record["faces"], top_labels=min(top_k, 2) if top_k > 1 else 1)
                if "frame" in record:
                    annotator = annotators.get(record["file"])
                    if annotator is None:
                        rate = video_frame_rate(record["file"]) if not record["file"].startswith("/dev/") else None
                        rate = (rate or 25.0) / args.every_n_frames if args.fps is None else args.fps
                        annotator = annotators[record["file"]] = VideoAnnotator(_annotated_path(annotate, record["file"], True, root), rate)
                    annotator.write(drawn)
                else:
                    save_image_atomically(drawn, _annotated_path(annotate, record["file"], False, root))
    finally:
        for annotator in annotators.values():
            annotator.close()
        if writer is not None:
            writer.close()
    print(f"{faces} face(s) in {successes} image(s)/frame(s)" + (f"; skipped {failures} unreadable file(s) of {failures + successes}" if failures else "")
          + (f"; results in {args.output}" if args.output else "") + (f"; annotated files in {annotate}" if annotate else ""),
          file=sys.stderr)
    if not successes:
        raise ValueError(f"none of the {failures} file(s) could be read as an image or video")
    return 0


if __name__ == "__main__":
    sys.exit(main())
