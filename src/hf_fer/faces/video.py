"""Faces in videos and streams: frames in bounded memory, IoU tracking, score smoothing, streamed results.

Everything here is a generator: a video of any length (or an endless webcam/RTSP stream) is decoded with PyAV
one frame at a time, at most ``batch_size`` sampled frames are held at once, and results are written as they come
(JSON lines, CSV or Parquet). Nothing keeps a list of all frames or all results.

    fer = pipeline("facial-expression-recognition")
    for frame in predict_video(fer, "talk.mp4", every_n_frames=5, smoothing=0.6):
        print(frame["frame"], [(face["id"], face["labels"][0]["label"]) for face in frame["faces"]])
"""
from __future__ import annotations

import csv
import io
import json
import math
import numbers
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "VIDEO_EXTENSIONS", "STREAM_PREFIXES", "VideoFrame", "is_video_source", "iter_video_frames", "IoUTracker",
    "predict_video", "ResultWriter", "draw_faces", "VideoAnnotator", "LANDMARK_NAMES", "save_image_atomically",
]

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp")
#: Sources PyAV opens that are not files: network streams and capture devices.
STREAM_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://", "/dev/video")
LANDMARK_NAMES = ("right_eye", "left_eye", "nose", "right_mouth", "left_mouth")


@dataclass
class VideoFrame:
    index: int  # frame number in the decoded stream (0-based)
    time: float | None  # presentation time in seconds, when the container knows it
    image: Any  # PIL RGB image


def is_video_source(source: str | os.PathLike) -> bool:
    """A video file (by extension) or a stream; an http(s) URL whose path names an image file is a photo."""
    text = str(source)
    if text.lower().startswith(("http://", "https://")):
        from urllib.parse import urlsplit

        from ..image_io import IMAGE_EXTENSIONS

        if urlsplit(text).path.lower().endswith(IMAGE_EXTENSIONS):
            return False
    return text.lower().endswith(VIDEO_EXTENSIONS) or text.startswith(STREAM_PREFIXES)


def _open_container(source: str | os.PathLike, format: str | None = None, options: dict | None = None):
    import av

    text = str(source)
    if format is None and text.startswith("/dev/video"):
        format = "v4l2"  # a Linux webcam
    if options is None and text.startswith(("rtsp://", "rtsps://")):
        options = {"rtsp_transport": "tcp"}
    try:
        return av.open(text, format=format, options=options or {}, timeout=(30.0, 30.0) if "://" in text else None)
    except (av.FFmpegError, OSError) as error:
        raise ValueError(f"{text}: cannot open as a video or stream: {error}") from None


def iter_video_frames(
    source: str | os.PathLike,
    *,
    every_n_frames: int = 1,
    fps: float | None = None,
    max_frames: int | None = None,
    format: str | None = None,
    options: dict | None = None,
) -> Iterator[VideoFrame]:
    """Decoded frames of a video file, capture device or network stream, sampled, one at a time.

    ``every_n_frames`` keeps frames 0, n, 2n...; ``fps`` keeps at most that many frames per second of video time
    (both may be given: a frame must pass both). ``max_frames`` stops after that many *kept* frames.
    """
    if every_n_frames < 1:
        raise ValueError(f"every_n_frames must be >= 1, got {every_n_frames}")
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    container = _open_container(source, format, options)
    try:
        if not container.streams.video:
            raise ValueError(f"{source}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        next_time, kept = None, 0
        for index, frame in enumerate(_decoded(container, stream, source)):
            if index % every_n_frames:
                continue
            seconds = float(frame.time) if frame.time is not None else None
            if fps is not None:
                now = seconds if seconds is not None else index / float(stream.average_rate or 25)
                if next_time is not None and now + 1e-6 < next_time:
                    continue
                next_time = (next_time if next_time is not None else now) + 1.0 / fps
                if next_time <= now:  # after a gap, resynchronise instead of bursting
                    next_time = now + 1.0 / fps
            image = frame.to_image()
            rotation = getattr(frame, "rotation", 0) or 0
            if rotation % 360:
                image = image.rotate(rotation, expand=True)  # display-matrix rotation (phones), counter-clockwise
            yield VideoFrame(index=index, time=seconds, image=image)
            kept += 1
            if max_frames is not None and kept >= max_frames:
                return
    finally:
        container.close()


def _decoded(container, stream, source) -> Iterator:
    """``container.decode(stream)``, with a read error that says which source failed and after how many frames."""
    import av

    decoded = 0
    frames = container.decode(stream)
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            return
        except (av.FFmpegError, OSError) as error:
            hint = ""
            if not decoded and str(source).lower().startswith(("http://", "https://")):
                hint = (" (a video file read over HTTP needs a server that answers range requests when its index is "
                        "at the end, as in most MP4 files; download it first if the server does not)")
            raise ValueError(f"{source}: reading the video failed after {decoded} frame(s): {error}{hint}") from None
        decoded += 1
        yield frame


def video_frame_rate(source: str | os.PathLike) -> float | None:
    container = _open_container(source)
    try:
        stream = container.streams.video[0] if container.streams.video else None
        return float(stream.average_rate) if stream is not None and stream.average_rate else None
    finally:
        container.close()


class IoUTracker:
    """Greedy IoU matching of each frame's boxes to the previous ones, so a face keeps its ``id``.

    A track survives ``max_missed`` sampled frames without a match (a blink of the detector); with
    ``smoothing`` = a in (0, 1), scores are an exponential moving average ``a * previous + (1 - a) * current``.
    """

    def __init__(self, iou_threshold: float = 0.3, max_missed: int = 5, smoothing: float = 0.0):
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.iou_threshold = iou_threshold
        self.max_missed = max_missed
        self.smoothing = smoothing
        self.next_id = 0
        self.track_ids: list[int] = []
        self.track_boxes = torch.zeros(0, 4)
        self.track_scores: list[torch.Tensor | None] = []
        self.missed: list[int] = []

    def update(self, boxes: torch.Tensor, probabilities: torch.Tensor) -> tuple[list[int], torch.Tensor]:
        """Ids for ``boxes`` [N, 4] and the (smoothed) probabilities [N, C]."""
        from torchvision.ops import box_iou

        count = boxes.shape[0]
        ids: list[int | None] = [None] * count
        matched_tracks: dict[int, int] = {}  # detection -> track index
        if count and self.track_ids:
            iou = box_iou(boxes, self.track_boxes)
            order = torch.argsort(iou.flatten(), descending=True)
            used_tracks: set[int] = set()
            for flat in order.tolist():
                det, track = divmod(flat, iou.shape[1])
                if iou[det, track] < self.iou_threshold:
                    break
                if ids[det] is not None or track in used_tracks:
                    continue
                ids[det] = self.track_ids[track]
                matched_tracks[det] = track
                used_tracks.add(track)
        smoothed = probabilities.clone()
        if self.smoothing:
            for det, track in matched_tracks.items():
                previous = self.track_scores[track]
                if previous is not None:
                    smoothed[det] = self.smoothing * previous + (1 - self.smoothing) * probabilities[det]
        # New state: matched + new tracks, then unmatched old tracks that may come back.
        new_ids, new_boxes, new_scores, new_missed = [], [], [], []
        for det in range(count):
            if ids[det] is None:
                ids[det] = self.next_id
                self.next_id += 1
            new_ids.append(ids[det])
            new_scores.append(smoothed[det])
            new_missed.append(0)
        new_boxes.append(boxes)
        unmatched = [t for t in range(len(self.track_ids)) if t not in set(matched_tracks.values())]
        keep = [t for t in unmatched if self.missed[t] + 1 <= self.max_missed]
        new_ids += [self.track_ids[t] for t in keep]
        new_scores += [self.track_scores[t] for t in keep]
        new_missed += [self.missed[t] + 1 for t in keep]
        new_boxes.append(self.track_boxes[keep] if keep else torch.zeros(0, 4))
        self.track_ids, self.track_scores, self.missed = new_ids, new_scores, new_missed
        self.track_boxes = torch.cat(new_boxes)
        return [int(i) for i in ids], smoothed


def predict_video(
    pipe,
    source: str | os.PathLike,
    *,
    every_n_frames: int = 1,
    fps: float | None = None,
    max_frames: int | None = None,
    batch_size: int = 8,
    top_k: int | None = None,
    detect: bool = True,
    smoothing: float = 0.0,
    iou_threshold: float = 0.3,
    max_missed: int = 5,
    return_images: bool = False,
    format: str | None = None,
    options: dict | None = None,
) -> Iterator[dict]:
    """Per sampled frame ``{"frame", "time", "faces": [{..., "id"}]}`` from a FER pipeline, streamed.

    Frames go through the pipeline ``batch_size`` at a time (the only frames held in memory); the tracker then
    runs in frame order. With ``return_images`` each result also carries ``"image"`` (the PIL frame) for drawing.
    """
    for argument, value in (("batch_size", batch_size), ("top_k", top_k)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
            raise ValueError(f"{argument} must be a positive integer, got {value!r}")
    tracker = IoUTracker(iou_threshold=iou_threshold, max_missed=max_missed, smoothing=smoothing)
    frames = iter_video_frames(source, every_n_frames=every_n_frames, fps=fps, max_frames=max_frames, format=format, options=options)
    name = str(source)
    while True:
        chunk: list[VideoFrame] = []
        for frame in frames:
            chunk.append(frame)
            if len(chunk) >= batch_size:
                break
        if not chunk:
            return
        results = pipe.process_images([frame.image for frame in chunk], detect=detect, batch_size=batch_size,
                                      names=[f"{name}#frame{frame.index}" for frame in chunk])
        for frame, result in zip(chunk, results):
            record = {"file": name, "frame": frame.index, "time": None if frame.time is None else round(frame.time, 4)}
            if result.error is not None:
                record["error"] = result.error
            else:
                ids, probabilities = tracker.update(result.boxes, result.probabilities)
                faces = pipe.format_result(result, top_k=top_k, probabilities=probabilities)
                for face, face_id in zip(faces, ids):
                    face["id"] = face_id
                record["faces"] = faces
            if return_images:
                record["image"] = frame.image
            yield record
        del chunk, results


def partial_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place: same folder (same file system) and extension."""
    return path.with_name(f".{path.stem}.partial{path.suffix}")


def save_image_atomically(image, path: str | os.PathLike) -> None:
    """``image.save(path)`` through a side file and a rename: a killed run never leaves a truncated image."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = partial_path(path)
    try:
        image.save(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


class ResultWriter:
    """Streams results to ``.jsonl`` (one line per image/frame, faces nested) or ``.csv`` / ``.parquet`` (one row
    per face, an image with no face or an error gets one row with an empty ``face``). Columns are labelled:
    ``label_1, score_1, ... label_k, score_k`` best first."""

    FORMATS = (".jsonl", ".csv", ".parquet")

    def __init__(self, path: str | os.PathLike, top_k: int, row_group_size: int = 4096):
        self.path = Path(path)
        self.suffix = self.path.suffix.lower()
        if self.suffix == ".json":
            self.suffix = ".jsonl"
        if self.suffix not in self.FORMATS:
            raise ValueError(f"--output {path}: unknown format {self.path.suffix!r}; use one of {', '.join(self.FORMATS)}")
        self.top_k = top_k
        self.columns = (["file", "frame", "time", "face", "id", "xmin", "ymin", "xmax", "ymax", "detection_score"]
                        + [f"{name}_{axis}" for name in LANDMARK_NAMES for axis in "xy"]
                        + [f"{kind}_{rank}" for rank in range(1, top_k + 1) for kind in ("label", "score")] + ["error"])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._rows: list[dict] = []
        self._row_group_size = row_group_size
        self._parquet = None
        # Parquet is readable only once its footer is written: it goes to a side file renamed at close(), so a
        # killed run never leaves a broken file (or clobbers the last complete one) at ``path``.
        self._partial = partial_path(self.path)
        self._handle = None
        self._csv = None
        if self.suffix == ".jsonl":
            self._handle = open(self.path, "w", encoding="utf-8")
        elif self.suffix == ".csv":
            self._handle = open(self.path, "w", newline="", encoding="utf-8")
            self._csv = csv.DictWriter(self._handle, fieldnames=self.columns)
            self._csv.writeheader()

    def rows(self, record: dict) -> list[dict]:
        base = {"file": record.get("file"), "frame": record.get("frame"), "time": record.get("time")}
        if "error" in record:
            return [base | {"error": record["error"]}]
        faces = record.get("faces") or []
        if not faces:
            return [base]
        rows = []
        for number, face in enumerate(faces):
            row = base | {"face": number, "id": face.get("id"), "detection_score": face.get("detection_score")} | face["box"]
            for name, point in zip(LANDMARK_NAMES, face.get("landmarks") or []):
                row[f"{name}_x"], row[f"{name}_y"] = point
            for rank, entry in enumerate(face["labels"][: self.top_k], start=1):
                row[f"label_{rank}"], row[f"score_{rank}"] = entry["label"], entry["score"]
            rows.append(row)
        return rows

    def write(self, record: dict) -> None:
        record = {key: value for key, value in record.items() if key != "image"}
        if self.suffix == ".jsonl":
            self._handle.write(json.dumps(record) + "\n")
            return
        rows = self.rows(record)
        if self._csv is not None:
            self._csv.writerows(rows)
            return
        self._rows.extend(rows)
        if len(self._rows) >= self._row_group_size:
            self._flush_parquet()

    def _schema(self):
        import pyarrow as pa

        types = {"file": pa.string(), "frame": pa.int64(), "time": pa.float64(), "face": pa.int32(), "id": pa.int64(),
                 "error": pa.string()}
        fields = []
        for column in self.columns:
            if column in types:
                fields.append(pa.field(column, types[column]))
            elif column.startswith("label_"):
                fields.append(pa.field(column, pa.string()))
            else:
                fields.append(pa.field(column, pa.float64()))
        return pa.schema(fields)

    def _flush_parquet(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._rows:
            return
        schema = self._schema()
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self._partial, schema)
        table = pa.Table.from_pylist([{c: row.get(c) for c in self.columns} for row in self._rows], schema=schema)
        self._parquet.write_table(table)
        self._rows.clear()

    def close(self) -> None:
        if self.suffix == ".parquet":
            self._flush_parquet()
            if self._parquet is None:  # nothing written: still leave a valid, empty file
                import pyarrow.parquet as pq

                pq.write_table(self._schema().empty_table(), self._partial)
            else:
                self._parquet.close()
            os.replace(self._partial, self.path)
        if self._handle is not None:
            self._handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230))


def draw_faces(image, faces: Sequence[dict], top_labels: int = 2):
    """A copy of ``image`` with each face's box, 5 landmarks and top labels drawn (PIL only)."""
    from PIL import ImageDraw, ImageFont

    image = image.convert("RGB").copy()
    draw = ImageDraw.Draw(image)
    scale = max(image.size) / 1000.0
    width = max(1, round(2 * scale))
    try:
        font = ImageFont.load_default(size=max(10, round(16 * scale)))
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    for number, face in enumerate(faces):
        color = _PALETTE[(face.get("id", number)) % len(_PALETTE)]
        box = face["box"]
        draw.rectangle([box["xmin"], box["ymin"], box["xmax"], box["ymax"]], outline=color, width=width)
        radius = max(1.5, 2.5 * scale)
        for x, y in face.get("landmarks") or []:
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=color)
        text = ", ".join(f"{entry['label']} {entry['score']:.2f}" for entry in face["labels"][:top_labels])
        if "id" in face:
            text = f"#{face['id']} {text}"
        left, top = box["xmin"], box["ymin"]
        text_box = draw.textbbox((left, top), text, font=font)
        height = text_box[3] - text_box[1] + 2 * width
        top = top - height if top - height >= 0 else box["ymax"]
        draw.rectangle([left, top, left + text_box[2] - text_box[0] + 2 * width, top + height], fill=color)
        draw.text((left + width, top + width), text, fill=(255, 255, 255), font=font)
    return image


class VideoAnnotator:
    """Writes annotated frames to a video file (H.264 when FFmpeg has it, else MPEG-4 Part 2), frame by frame."""

    def __init__(self, path: str | os.PathLike, fps: float):
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._partial = partial_path(self.path)  # renamed into place by close(): a killed run leaves no broken video
        self.container = av.open(str(self._partial), mode="w")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        rate = max(1, round(fps)) if fps and math.isfinite(fps) else 25
        self.stream = self.container.add_stream(codec, rate=rate)
        self.stream.pix_fmt = "yuv420p"
        self.size = None

    def write(self, image) -> None:
        import av

        if self.size is None:
            width, height = image.size
            self.size = (width - width % 2, height - height % 2)  # yuv420p needs even sizes
            self.stream.width, self.stream.height = self.size
        if image.size != self.size:
            fits = image.width >= self.size[0] and image.height >= self.size[1]
            image = image.crop((0, 0, *self.size)) if fits else image.resize(self.size)
        frame = av.VideoFrame.from_image(image)
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        if self.size is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
        self.container.close()
        os.replace(self._partial, self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
