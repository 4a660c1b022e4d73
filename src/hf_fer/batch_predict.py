"""Sharded batch prediction over a whole dataset: ``accelerate launch -m hf_fer.predict --dataset D --output DIR``.

The work is split by accelerate, not by a home-made engine: every process started by ``accelerate launch`` (one
per GPU, CPU process or node, see ``PartialState``) takes one contiguous, deterministic range of row indices (the
split ``PartialState.split_between_processes`` makes), runs the face pipeline's batched inference on it and writes
one Parquet shard. Rank 0 then writes ``index.json``. The output folder must be shared by every node.

Layout of ``DIR``::

    run.json                              settings of the run (checked when resuming)
    shards/shard-00000-of-00002.parquet   one per process: one row per face (or per input row without a face)
    .chunks/shard-00000/rows-*.parquet    finished chunks of a shard still running (removed once it is merged)
    index.json                            written last by rank 0: rows per shard, label order, model, dataset fingerprint

Columns: ``row`` (index of the input row), ``id`` (image path, ``--id-column`` value or ``row N``), ``frame`` and
``time`` (videos), ``face`` (number of the face in the image; empty when no face was found or the row failed),
``track`` (a face's id across video frames), ``xmin ymin xmax ymax detection_score``, ``label_1, score_1, ...``
(best first), ``probabilities`` (every class, in the order of ``index.json``'s ``label_names``) and ``error``.

Why it is safe to kill: every file is written to a temporary name and renamed. A shard is processed in chunks of
``--chunk-size`` rows, each its own file; a rerun with the same command verifies and skips finished shards and
chunks and starts at the first missing chunk. A row that cannot be decoded is recorded with its ``error``; the
other rows go on.

Faces: ``--face-detect`` is off by default, because datasets (FER benchmarks, ``prepare-dataset --align`` output)
hold aligned face crops, as ``hf-fer evaluate`` assumes: each image is classified whole. Pass ``--face-detect``
for photos and videos: faces are then detected and aligned like ``hf-fer predict`` does (one Parquet row per face).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["add_dataset_arguments", "build_parser", "main", "run_from_args", "predict_dataset", "read_predictions", "shard_bounds",
           "open_source", "BatchPredictError", "DEFAULT_CHUNK_SIZE", "INDEX_NAME"]

FORMAT = "hf_fer.batch_predict"
FORMAT_VERSION = 1
INDEX_NAME = "index.json"
RUN_NAME = "run.json"
SHARDS_DIR = "shards"
CHUNKS_DIR = ".chunks"
DEFAULT_CHUNK_SIZE = 1000
METADATA_KEY = b"hf_fer"
#: Settings that may change between a run and its resumption (they do not change the predictions).
_FREE_SETTINGS = ("batch_size", "device")


class BatchPredictError(ValueError):
    """The dataset, the output folder or a previous run's files cannot be used; the message says why."""


# ---------------------------------------------------------------------------------------------- sources


@dataclass
class Source:
    """What is predicted: the rows of a ``datasets.Dataset`` or a sorted list of image/video files."""

    kind: str  # "dataset" or "files"
    description: str
    fingerprint: str
    dataset: Any = None  # datasets.Dataset whose image column is not decoded (entries {"bytes", "path"})
    files: list[str] = field(default_factory=list)
    image_column: str | None = None
    id_column: str | None = None
    split: str | None = None

    def __len__(self) -> int:
        return len(self.dataset) if self.kind == "dataset" else len(self.files)

    def items(self, start: int, end: int) -> tuple[list[Any], list[str]]:
        """Inputs (``datasets`` image entries or file paths) of rows ``start..end-1`` and their ids."""
        if self.kind == "files":
            files = self.files[start:end]
            return list(files), list(files)
        rows = self.dataset[start:end]
        entries = rows[self.image_column]
        if self.id_column is not None:
            ids = [str(value) for value in rows[self.id_column]]
        else:
            ids = [(entry.get("path") if isinstance(entry, dict) else None) or f"row {start + offset}"
                   for offset, entry in enumerate(entries)]
        return entries, ids


def _is_dataset_source(value: str) -> bool:
    """A ``datasets`` source (saved folder, Hub-style folder, Hub id, ``synthetic``) rather than files/folders of images."""
    from .data.loading import _looks_like_path

    if value == "synthetic":
        return True
    path = Path(value).expanduser()
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            return True
        return _hub_style_folder(path)
    return not path.exists() and not _looks_like_path(value)


def _hub_style_folder(path: Path) -> bool:
    """A local copy of a Hub dataset repository: data files (Parquet, Arrow, CSV, JSON Lines) rather than images."""
    suffixes = (".parquet", ".arrow", ".csv", ".jsonl")
    return any(p.suffix in suffixes for p in path.glob("*")) or any(p.suffix in suffixes for p in path.glob("data/**/*"))


def _pick_split(loaded, split: str | None, source: str):
    import datasets

    if isinstance(loaded, datasets.Dataset):
        return loaded, split or str(loaded.split or "train")
    if split is not None:
        if split not in loaded:
            raise BatchPredictError(f"--split {split}: not in {source}; available splits: {list(loaded)}")
        return loaded[split], split
    if len(loaded) == 1:
        name = next(iter(loaded))
        return loaded[name], name
    raise BatchPredictError(f"{source} has several splits {list(loaded)}; choose one with --split")


def _image_column(dataset, requested: str | None) -> str:
    import datasets

    if requested is not None:
        if requested not in dataset.column_names:
            raise BatchPredictError(f"--image-column {requested}: no such column; columns are {dataset.column_names}")
        return requested
    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.Image):
            return name
    for name in ("image", "img"):
        if name in dataset.column_names:
            return name
    raise BatchPredictError(f"no image column (a datasets.Image feature, or 'image'/'img'); columns are {dataset.column_names}; "
                            "name it with --image-column")


def _files_of(values: Sequence[str]) -> list[str]:
    """Folders (every image and video under them, sorted), ``.txt`` lists (one path per line) and files, in order."""
    from .faces.video import STREAM_PREFIXES
    from .predict import collect_inputs

    files: list[str] = []
    for value in values:
        if str(value).startswith(STREAM_PREFIXES):
            raise BatchPredictError(f"--dataset {value}: a stream never ends, so it cannot be sharded; use `hf-fer predict {value}`")
        path = Path(value).expanduser()
        if path.is_file() and path.suffix.lower() == ".txt":
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
            files.extend(str((path.parent / line) if not Path(line).is_absolute() else Path(line)) for line in lines if line and not line.startswith("#"))
        elif path.is_dir():
            files.extend(collect_inputs([path], recursive=True))
        elif path.exists():
            files.append(str(path))
        else:
            raise BatchPredictError(f"--dataset {value}: no such file or folder")
    return files


def _files_fingerprint(files: Sequence[str]) -> str:
    """Names, sizes and modification times of the files: a changed or replaced file changes the fingerprint."""
    digest = hashlib.sha256()
    for name in files:
        try:
            stat = os.stat(name)
            digest.update(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{name}\t-\n".encode())  # missing now: recorded as an error row later
    return "files-sha256:" + digest.hexdigest()


def open_source(values: str | os.PathLike | Sequence[str | os.PathLike] | Any, *, split: str | None = None,
                image_column: str | None = None, id_column: str | None = None) -> Source:
    """Open what ``--dataset`` names.

    One value that is a ``datasets`` source (a ``save_to_disk`` / ``prepare-dataset`` folder, a local copy of a Hub
    dataset repository, a Hub id, ``"synthetic"``) or an in-memory ``datasets.Dataset``/``DatasetDict``: its rows.
    Anything else (image folders, image or video files, ``.txt`` files listing paths): the files, in that order
    (folders sorted, sub-folders included).
    """
    import datasets

    if isinstance(values, (datasets.Dataset, datasets.DatasetDict)):
        data, split = _pick_split(values, split, "the dataset")
        description = "in-memory dataset"
    else:
        values = [str(values)] if isinstance(values, (str, os.PathLike)) else [str(v) for v in values]
        if not values:
            raise BatchPredictError("--dataset: nothing given")
        if len(values) == 1 and _is_dataset_source(values[0]):
            from .data.loading import load_fer_dataset

            path = Path(values[0]).expanduser()
            if path.is_dir() and not (path / "dataset_dict.json").exists() and not (path / "state.json").exists():
                try:  # a Hub-style repository folder: the packaged loaders infer the format
                    loaded = datasets.load_dataset(str(path))
                except Exception as error:
                    raise BatchPredictError(f"could not load {path} as a datasets repository folder: {error}") from error
            else:
                loaded = load_fer_dataset(values[0], check_labels=False)  # images only: unlabelled rows are fine
            data, split = _pick_split(loaded, split, values[0])
            description = values[0]
        else:
            if split is not None or image_column is not None or id_column is not None:
                raise BatchPredictError("--split, --image-column and --id-column apply to datasets, not to files and folders")
            files = _files_of(values)
            if not files:
                raise BatchPredictError("--dataset: no image or video file in " + ", ".join(values))
            return Source(kind="files", description=", ".join(values), fingerprint=_files_fingerprint(files), files=files)
    column = _image_column(data, image_column)
    if id_column is not None and id_column not in data.column_names:
        raise BatchPredictError(f"--id-column {id_column}: no such column; columns are {data.column_names}")
    fingerprint = f"datasets:{getattr(data, '_fingerprint', None)}"
    keep = [column] + ([id_column] if id_column is not None and id_column != column else [])
    data = data.select_columns(keep)
    if isinstance(data.features[column], datasets.Image):
        data = data.cast_column(column, datasets.Image(decode=False))  # decoded by hf_fer: a bad row is recorded, not fatal
    return Source(kind="dataset", description=description, fingerprint=fingerprint, dataset=data, image_column=column,
                  id_column=id_column, split=split)


# ---------------------------------------------------------------------------------------------- sharding


def shard_bounds(num_rows: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``[start, end)`` of process ``rank``: the contiguous split ``PartialState.split_between_processes``
    makes (the first ``num_rows % world_size`` processes take one row more). Computed, not materialised: no
    list of a billion indices."""
    per_process, extras = divmod(num_rows, world_size)
    start = rank * per_process + min(rank, extras)
    return start, start + per_process + (1 if rank < extras else 0)


def _shard_name(rank: int, world_size: int) -> str:
    return f"shard-{rank:05d}-of-{world_size:05d}.parquet"


def _chunk_path(output: Path, rank: int, start: int, end: int) -> Path:
    return output / CHUNKS_DIR / f"shard-{rank:05d}" / f"rows-{start:012d}-{end:012d}.parquet"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _atomic_write_json(path: Path, value: dict) -> None:
    _atomic_write_bytes(path, (json.dumps(value, indent=2) + "\n").encode())


def _schema(label_names: Sequence[str], top_k: int, metadata: dict | None = None):
    import pyarrow as pa

    fields = [pa.field("row", pa.int64(), nullable=False), pa.field("id", pa.string()), pa.field("frame", pa.int64()),
              pa.field("time", pa.float64()), pa.field("face", pa.int32()), pa.field("track", pa.int64()),
              *(pa.field(name, pa.float32()) for name in ("xmin", "ymin", "xmax", "ymax", "detection_score"))]
    for rank in range(1, top_k + 1):
        fields += [pa.field(f"label_{rank}", pa.string()), pa.field(f"score_{rank}", pa.float32())]
    fields += [pa.field("probabilities", pa.list_(pa.float32())), pa.field("error", pa.string())]
    schema = pa.schema(fields)
    return schema.with_metadata({METADATA_KEY: json.dumps(metadata)}) if metadata is not None else schema


def _write_table(path: Path, rows: list[dict], schema) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), temporary)
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _read_checked(path: Path, start: int, end: int) -> dict | None:
    """The metadata of a finished chunk/shard file when it holds exactly rows ``start..end-1``; ``None`` otherwise."""
    import numpy as np
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(path)
        metadata = json.loads((handle.schema_arrow.metadata or {}).get(METADATA_KEY, b"null"))
        rows = handle.read(columns=["row"]).column("row").to_numpy()
    except Exception as error:  # noqa: BLE001 — a damaged file is redone, whatever pyarrow says about it
        print(f"warning: {path} cannot be read ({type(error).__name__}: {error}); it is redone", file=sys.stderr)
        return None
    if not isinstance(metadata, dict) or (metadata.get("start"), metadata.get("end")) != (start, end):
        print(f"warning: {path} does not describe rows {start}..{end - 1}; it is redone", file=sys.stderr)
        return None
    if not np.array_equal(np.unique(rows), np.arange(start, end)) or metadata.get("num_records") != len(rows):
        print(f"warning: {path} does not hold every row {start}..{end - 1} exactly; it is redone", file=sys.stderr)
        return None
    return metadata


# ---------------------------------------------------------------------------------------------- predicting


def _face_rows(row: int, ident: str, result, label_names: Sequence[str], top_k: int) -> list[dict]:
    base = {"row": row, "id": ident}
    if result.error is not None:
        return [base | {"error": result.error}]
    if result.num_faces == 0:
        return [base]
    probabilities = result.probabilities.float()
    scores, indices = probabilities.topk(top_k, dim=-1)
    boxes = result.boxes.tolist()
    detection = result.detection_scores.tolist() if result.detection_scores is not None else [None] * len(boxes)
    records = []
    for face, (box, det, vector, best, best_scores) in enumerate(zip(boxes, detection, probabilities.tolist(), indices.tolist(), scores.tolist())):
        record = base | {"face": face, "xmin": box[0], "ymin": box[1], "xmax": box[2], "ymax": box[3], "detection_score": det,
                         "probabilities": vector}
        for rank, (index, score) in enumerate(zip(best, best_scores), start=1):
            record[f"label_{rank}"], record[f"score_{rank}"] = label_names[index], score
        records.append(record)
    return records


def _video_rows(pipe, row: int, file: str, label_names: Sequence[str], top_k: int, options: dict) -> list[dict]:
    """Every sampled frame's faces of one video (the pipeline's video path, faces tracked); an error row when it breaks."""
    from .faces.video import predict_video

    records: list[dict] = []
    position = {name: index for index, name in enumerate(label_names)}
    try:
        for frame in predict_video(pipe, file, top_k=None, **options):
            base = {"row": row, "id": file, "frame": frame["frame"], "time": frame["time"]}
            if "error" in frame:
                records.append(base | {"error": frame["error"]})
                continue
            if not frame["faces"]:
                records.append(base)
            for number, face in enumerate(frame["faces"]):
                vector = [0.0] * len(label_names)
                for entry in face["labels"]:
                    vector[position[entry["label"]]] = entry["score"]
                record = base | {"face": number, "track": face.get("id"), **face["box"], "detection_score": face["detection_score"],
                                 "probabilities": vector}
                for rank, entry in enumerate(face["labels"][:top_k], start=1):
                    record[f"label_{rank}"], record[f"score_{rank}"] = entry["label"], entry["score"]
                records.append(record)
    except Exception as error:  # noqa: BLE001 — one bad video never sinks the run
        import av

        if not isinstance(error, (ValueError, OSError, av.FFmpegError)):
            raise
        records.append({"row": row, "id": file, "error": str(error) if file in str(error) else f"{file}: {error}"})
    if not records:
        records.append({"row": row, "id": file, "error": f"{file}: no frame could be decoded"})
    return records


def _predict_rows(pipe, source: Source, start: int, end: int, *, label_names, top_k: int, batch_size: int,
                  face_detect: bool, video_options: dict) -> list[dict]:
    """Records of rows ``start..end-1``: images through ``pipe.process_images`` ``batch_size`` at a time, videos whole."""
    from .faces.video import is_video_source

    items, ids = source.items(start, end)
    records: list[dict] = []
    pending: list[int] = []

    def flush():
        if not pending:
            return
        results = pipe.process_images([items[i] for i in pending], detect=face_detect, batch_size=batch_size,
                                      names=[ids[i] for i in pending])
        for offset, result in zip(pending, results):
            records.extend(_face_rows(start + offset, ids[offset], result, label_names, top_k))
        pending.clear()

    for offset, item in enumerate(items):
        if source.kind == "files" and is_video_source(item):
            flush()
            records.extend(_video_rows(pipe, start + offset, item, label_names, top_k, dict(video_options, detect=face_detect,
                                                                                           batch_size=batch_size)))
            continue
        pending.append(offset)
        if len(pending) >= batch_size:
            flush()
    flush()
    return records


def _fault(name: str) -> None:
    if os.environ.get("HF_FER_FAULT_POINT"):  # tests interrupt runs at exact places (hf_fer.training.state.fault_point)
        from .training.state import fault_point

        fault_point(name)


def _model_record(loaded) -> dict:
    from .evaluation.provenance import checkpoint_hashes

    return {"source": loaded.source, "model_type": getattr(loaded.model.config, "model_type", None),
            "checkpoint": checkpoint_hashes(loaded.source, loaded.model)}


def _comparable(settings: dict) -> dict:
    """What must not change between a run and its resumption. The data and the weights are compared by content
    (fingerprint, checkpoint hash), not by how they were named (``./data`` and ``data`` are the same dataset)."""
    settings = {key: value for key, value in settings.items() if key not in _FREE_SETTINGS}
    dataset = dict(settings.get("dataset") or {})
    if dataset.get("kind") == "dataset":
        dataset.pop("source", None)
    model = dict(settings.get("model") or {})
    if (model.get("checkpoint") or {}).get("sha256"):
        model.pop("source", None)
    if settings.get("face_detect") and "detection_size" not in settings:  # runs recorded before the option existed
        from .faces.pipeline import DEFAULT_DETECTION_SIZE

        settings["detection_size"] = DEFAULT_DETECTION_SIZE
    return {**settings, "dataset": dataset, "model": model}


def _check_run(output: Path, settings: dict) -> None:
    """Refuse to mix two different runs in one folder; a rerun with the same settings resumes."""
    path = output / RUN_NAME
    if not path.exists():
        return
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))["settings"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise BatchPredictError(f"{path} is damaged ({error}); delete {output} or choose another --output") from None
    previous, current = _comparable(previous), _comparable(settings)
    differing = sorted(key for key in set(previous) | set(current) if previous.get(key) != current.get(key))
    if differing:
        details = "; ".join(f"{key}: was {previous.get(key)!r}, now {current.get(key)!r}" for key in differing)
        raise BatchPredictError(f"{output} holds another run ({details}); rerun it with the same settings to resume, "
                                "or choose another --output")


def predict_dataset(
    dataset: str | os.PathLike | Sequence[str | os.PathLike] | Any,
    output_dir: str | os.PathLike,
    *,
    model: str | os.PathLike | None = None,
    split: str | None = None,
    image_column: str | None = None,
    id_column: str | None = None,
    batch_size: int = 32,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    top_k: int = 3,
    face_detect: bool = False,
    detection_size: int | None = 640,
    every_n_frames: int = 1,
    fps: float | None = None,
    device: str = "auto",
    trust_remote_code: bool = False,
    quiet: bool = False,
) -> dict | None:
    """Predict every row of ``dataset`` into ``output_dir``: this process's shard, then (rank 0) the index.

    Run it in every process of an ``accelerate launch`` (or alone: one shard). Returns the index on rank 0,
    ``None`` on the other ranks. See the module docstring for the folder layout and the columns.
    """
    from accelerate import PartialState

    if batch_size < 1 or chunk_size < 1 or top_k < 1 or every_n_frames < 1:
        raise ValueError(f"batch_size, chunk_size, top_k and every_n_frames must be positive, got {batch_size}, {chunk_size}, {top_k}, {every_n_frames}")
    from accelerate.utils import parse_flag_from_env

    # As Accelerator does: CPU processes (gloo) when launched with --cpu. The long timeout lets a process whose
    # shard was already finished wait at the final barrier for the others, however long their shards take.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or device == "cpu", timeout=_dt.timedelta(days=7))
    rank, world_size = state.process_index, state.num_processes
    output = Path(output_dir).expanduser()
    log = (lambda message: None) if quiet else (lambda message: print(f"[rank {rank}/{world_size}] {message}", file=sys.stderr, flush=True))

    with state.main_process_first():  # a Hub dataset is prepared once, then read from the cache by the others
        source = open_source(dataset, split=split, image_column=image_column, id_column=id_column)
    if model is None:
        from . import pretrained_path

        model = str(pretrained_path())
    from .evaluation.inference import load_model_for_inference
    from .faces.pipeline import TASK, FacialExpressionRecognitionPipeline

    if device == "auto" and world_size > 1:
        device = str(state.device)  # one GPU per process (cuda:LOCAL_RANK), or the CPU
    loaded = load_model_for_inference(str(model), device=device, trust_remote_code=trust_remote_code)
    pipe = FacialExpressionRecognitionPipeline(model=loaded.model, image_processor=loaded.image_processor, device=loaded.device, task=TASK,
                                               detection_size=detection_size)
    label_names = list(pipe.label_names)
    top_k = min(top_k, len(label_names))
    num_rows = len(source)
    video_options = {"every_n_frames": every_n_frames, "fps": fps}
    settings = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "model": _model_record(loaded),
        "dataset": {"source": source.description, "kind": source.kind, "split": source.split, "image_column": source.image_column,
                    "id_column": source.id_column, "num_rows": num_rows, "fingerprint": source.fingerprint},
        "label_names": label_names, "top_k": top_k, "face_detect": face_detect, "video": video_options,
        "num_shards": world_size, "chunk_size": chunk_size, "batch_size": batch_size, "device": str(loaded.device),
    }
    if face_detect:
        settings["detection_size"] = detection_size
    _check_run(output, settings)  # every rank checks; all compute the same settings, so all agree
    if state.is_main_process and not (output / RUN_NAME).exists():
        _atomic_write_json(output / RUN_NAME, {"settings": settings, "started": _now()})
    if rank == 0:
        faces = ("faces detected and aligned as hf-fer predict does" if face_detect
                 else "no face detection: each image is one aligned face crop (--face-detect for photos)")
        print(f"hf-fer predict --dataset: {num_rows} row(s) of {source.description} over {world_size} process(es); model "
              f"{loaded.source}; {faces}", file=sys.stderr, flush=True)
        if not face_detect and source.kind == "files" and any(_is_video(f) for f in source.files[:1000]):
            print("warning: videos without --face-detect: each whole frame is classified as one face", file=sys.stderr)

    start, end = shard_bounds(num_rows, rank, world_size)
    shard_path = output / SHARDS_DIR / _shard_name(rank, world_size)
    stats = _run_shard(pipe, source, output, shard_path, rank, start, end, label_names=label_names, top_k=top_k,
                       batch_size=batch_size, chunk_size=chunk_size, face_detect=face_detect, video_options=video_options,
                       log=log)
    rate = f"{stats['images_per_second']:.1f} images/s" if stats["images_per_second"] is not None else "nothing left to do"
    print(f"[rank {rank}/{world_size}] rows {start}..{end - 1}: {stats['rows_this_run']} predicted in {stats['seconds']:.1f} s "
          f"({rate}), {stats['rows_resumed']} already done, {stats['num_errors']} error(s)", file=sys.stderr, flush=True)

    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    index = _write_index(output, settings, world_size, num_rows)
    print(f"hf-fer predict --dataset: {index['num_rows']} row(s), {index['num_records']} record(s), {index['num_errors']} error(s); "
          f"shards in {output / SHARDS_DIR}, index {output / INDEX_NAME}", file=sys.stderr, flush=True)
    return index


def _is_video(file: str) -> bool:
    from .faces.video import is_video_source

    return is_video_source(file)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _run_shard(pipe, source: Source, output: Path, shard_path: Path, rank: int, start: int, end: int, *, label_names, top_k: int,
               batch_size: int, chunk_size: int, face_detect: bool, video_options: dict, log) -> dict:
    """This process's shard: finished → verified and skipped; else its missing chunks, then one merged file."""
    import pyarrow.parquet as pq

    done = _read_checked(shard_path, start, end) if shard_path.exists() else None
    if done is not None:
        log(f"{shard_path.name} is complete: skipped")
        return {**done, "rows_this_run": 0, "rows_resumed": end - start, "seconds": 0.0, "images_per_second": None}
    bounds = [(first, min(first + chunk_size, end)) for first in range(start, end, chunk_size)]
    chunk_metadata: list[dict] = []
    computed = resumed = 0
    seconds = 0.0
    for first, last in bounds:
        path = _chunk_path(output, rank, first, last)
        metadata = _read_checked(path, first, last) if path.exists() else None
        if metadata is not None:
            resumed += last - first
            chunk_metadata.append(metadata)
            continue
        began = time.perf_counter()
        records = _predict_rows(pipe, source, first, last, label_names=label_names, top_k=top_k, batch_size=batch_size,
                                face_detect=face_detect, video_options=video_options)
        elapsed = time.perf_counter() - began
        metadata = {"start": first, "end": last, "num_records": len(records),
                    "num_errors": sum(1 for r in records if r.get("error") is not None), "seconds": round(elapsed, 4)}
        _write_table(path, records, _schema(label_names, top_k, metadata))
        chunk_metadata.append(metadata)
        computed += last - first
        seconds += elapsed
        log(f"rows {first}..{last - 1} written ({computed + resumed}/{end - start}; {(last - first) / max(elapsed, 1e-9):.1f} images/s)")
        _fault("batch_predict.chunk")
    resumed_note = f"; {resumed} row(s) resumed from finished chunks" if resumed else ""
    metadata = {"start": start, "end": end, "num_records": sum(m["num_records"] for m in chunk_metadata),
                "num_errors": sum(m["num_errors"] for m in chunk_metadata), "rank": rank,
                "seconds": round(sum(m["seconds"] for m in chunk_metadata), 4)}
    metadata["images_per_second"] = round((end - start) / metadata["seconds"], 2) if metadata["seconds"] > 0 else None
    schema = _schema(label_names, top_k, metadata)
    shard_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = shard_path.with_name(f".{shard_path.name}.{os.getpid()}.tmp")
    with pq.ParquetWriter(temporary, schema) as writer:  # chunk by chunk: memory stays at one chunk
        for first, last in bounds:
            writer.write_table(pq.read_table(_chunk_path(output, rank, first, last)).replace_schema_metadata(schema.metadata))
        if not bounds:
            writer.write_table(schema.empty_table())
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, shard_path)
    for first, last in bounds:  # merged: the chunks are no longer needed
        _chunk_path(output, rank, first, last).unlink(missing_ok=True)
    for folder in (_chunk_path(output, rank, 0, 0).parent, output / CHUNKS_DIR):
        try:
            folder.rmdir()  # only when empty (other ranks may still be writing theirs)
        except OSError:
            pass
    log(f"{shard_path.name} written{resumed_note}")
    return {**metadata, "rows_this_run": computed, "rows_resumed": resumed, "seconds": seconds,
            "images_per_second": computed / seconds if seconds > 0 else None}


def _write_index(output: Path, settings: dict, world_size: int, num_rows: int) -> dict:
    """Rank 0, after every process finished: verify every shard and write ``index.json`` (atomically)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    shards, errors = [], []
    for rank in range(world_size):
        start, end = shard_bounds(num_rows, rank, world_size)
        path = output / SHARDS_DIR / _shard_name(rank, world_size)
        if not path.exists():
            raise BatchPredictError(f"{path} is missing: every process must write into the same --output folder "
                                    "(on several nodes, a shared filesystem)")
        metadata = _read_checked(path, start, end)
        if metadata is None:
            raise BatchPredictError(f"{path} does not hold rows {start}..{end - 1}; rerun the same command to redo it")
        shards.append({"file": f"{SHARDS_DIR}/{path.name}", "rank": rank, "rows": [start, end], "num_rows": end - start,
                       "num_records": metadata["num_records"], "num_errors": metadata["num_errors"],
                       "seconds": metadata["seconds"], "images_per_second": metadata.get("images_per_second")})
        if metadata["num_errors"] and len(errors) < 100:
            table = pq.read_table(path, columns=["row", "id", "error"])
            failed = table.filter(pc.is_valid(table.column("error")))
            errors.extend(failed.slice(0, 100 - len(errors)).to_pylist())
    from . import __version__

    index = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "model": settings["model"], "dataset": settings["dataset"], "label_names": settings["label_names"],
        "top_k": settings["top_k"], "face_detect": settings["face_detect"], "video": settings["video"],
        "chunk_size": settings["chunk_size"], "num_shards": world_size, "num_rows": num_rows,
        "num_records": sum(s["num_records"] for s in shards), "num_errors": sum(s["num_errors"] for s in shards),
        "shards": shards, "errors": errors, "errors_listed": len(errors), "finished": _now(), "hf_fer_version": __version__,
    }
    _atomic_write_json(output / INDEX_NAME, index)
    return index


def read_predictions(output_dir: str | os.PathLike):
    """The merged predictions of a finished run as one ``pyarrow.Table`` in row order (shards in the index's order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    output = Path(output_dir)
    index_path = output / INDEX_NAME
    if not index_path.is_file():
        raise BatchPredictError(f"{index_path}: no index; the run has not finished (rerun the same command to resume)")
    index = json.loads(index_path.read_text(encoding="utf-8"))
    return pa.concat_tables([pq.read_table(output / shard["file"]).replace_schema_metadata(None) for shard in index["shards"]])


# ---------------------------------------------------------------------------------------------- command line


def add_dataset_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``hf-fer predict --dataset`` (sharded batch prediction), in one place for any parser."""
    from hf_fer_cli.parsers import add_dataset_arguments as add

    return add(parser)


def build_parser(prog: str = "hf-fer predict --dataset") -> argparse.ArgumentParser:
    """The parser lives in the torch-free :mod:`hf_fer_cli.parsers`, so ``--help`` and argument errors answer at once."""
    from hf_fer_cli.parsers import predict_dataset_parser

    return predict_dataset_parser(prog)


def run_from_args(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run from parsed options: those of :func:`build_parser`, or of any parser that has the same names
    (``hf-fer predict``'s, plus :func:`add_dataset_arguments`). ``argv`` is re-used when ``accelerate launch --cpu``
    has to be turned into N processes."""
    if not args.dataset:
        raise BatchPredictError("--dataset: give a dataset, folders or files")
    if not getattr(args, "output", None):
        raise BatchPredictError("--dataset needs --output DIR (the folder of the Parquet shards and index.json)")
    if os.environ.get("ACCELERATE_USE_CPU") and "WORLD_SIZE" not in os.environ:
        # `accelerate launch --cpu --num_processes N` starts ONE process; run N (gloo), as hf-fer train does.
        from .training.launch import relaunch_cpu_processes_if_needed

        exit_code = relaunch_cpu_processes_if_needed(["-m", "hf_fer.batch_predict", *argv])
        if exit_code is not None:
            return exit_code
    index = predict_dataset(args.dataset if len(args.dataset) > 1 else args.dataset[0], args.output, model=args.model,
                            split=args.split, image_column=args.image_column, id_column=args.id_column,
                            batch_size=args.batch_size, chunk_size=args.chunk_size, top_k=args.top_k,
                            face_detect=args.face_detect, detection_size=args.detection_size, every_n_frames=args.every_n_frames, fps=args.fps,
                            device=args.device, trust_remote_code=args.trust_remote_code, quiet=args.quiet)
    if index is not None and index["num_rows"] and index["num_errors"] >= index["num_rows"]:
        raise BatchPredictError(f"none of the {index['num_rows']} row(s) could be predicted; errors are in {Path(args.output) / INDEX_NAME}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_from_args(build_parser().parse_args(argv), argv)


if __name__ == "__main__":
    sys.exit(main())
