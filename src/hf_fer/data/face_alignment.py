"""``prepare-dataset --align``: align raw benchmark images with the landmarks the benchmark ships, or the detector.

The same code as the face pipeline (:func:`hf_fer.faces.align_faces`) makes the crops, so a model trained on an
aligned dataset sees at training time what the pipeline gives it at inference time. Where the landmarks come from:

- RAF-DB: the 5 manual points of ``Annotation/manual/<image>_manu_attri.txt`` (the download's name; the points
  are followed by gender/race/age lines), ``<image>_manu_ldmk.txt`` or ``<image>_manual.txt``, for the *original*
  images (``Image/original/``; the dataset's own ``Image/aligned/`` faces are replaced by ours);
- AffectNet (``training.csv`` / ``validation.csv``): the ``facial_landmarks`` column (68 iBUG points) reduced to 5;
- everything else (and images whose landmarks are missing): the shipped RetinaFace, most confident face.

What was used is counted per source (and why the detector stood in for shipped landmarks) and written into the
dataset's info and the validation report, which ``prepare-dataset`` prints.
"""
from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

__all__ = ["ALIGNMENT_PRESETS", "resolve_dataset_alignment", "landmarks_68_to_5", "order_five_points",
           "read_raf_db_manual_landmarks", "RAF_DB_MANUAL_SUFFIXES", "DatasetAligner", "align_raw_benchmark"]


def _presets() -> dict[str, dict]:
    from ..faces.alignment import RAFDB_ALIGNMENT, scaled_template

    return {
        "raf-db": dict(RAFDB_ALIGNMENT),
        "arcface-112": {"method": "similarity_5pt", "template": scaled_template(112), "output_size": [112, 112],
                        "source": "insightface ArcFace 112x112 template"},
        "arcface-224": {"method": "similarity_5pt", "template": scaled_template(224), "output_size": [224, 224],
                        "source": "insightface ArcFace template scaled to 224x224"},
    }


ALIGNMENT_PRESETS = ("raf-db", "arcface-112", "arcface-224")


def resolve_dataset_alignment(spec: str | None, benchmark: str) -> dict:
    """``--align`` value → a ``face_alignment`` dict with a fixed output size.

    ``None``/``"auto"``: RAF-DB's (approximated) template for RAF-DB, ArcFace 112 otherwise; a preset name; a JSON
    file holding a ``face_alignment`` dict; or a model folder / Hub id, whose image processor's ``face_alignment``
    is used (so the dataset matches that checkpoint).
    """
    from ..faces.alignment import validate_face_alignment

    presets = _presets()
    if spec in (None, "", "auto"):
        alignment = presets["raf-db" if benchmark == "raf-db" else "arcface-112"]
    elif spec in presets:
        alignment = presets[spec]
    elif str(spec).endswith(".json") and Path(spec).is_file():
        alignment = json.loads(Path(spec).read_text())
        alignment = alignment.get("face_alignment", alignment)
    else:
        import hf_fer  # noqa: F401
        from transformers import AutoImageProcessor

        from ..faces import get_face_alignment

        try:
            processor = AutoImageProcessor.from_pretrained(spec, trust_remote_code=False)
        except Exception as error:  # noqa: BLE001
            raise ValueError(f"--align {spec}: not a preset ({', '.join(presets)}), a face_alignment JSON file, or a model "
                             f"with an image processor ({error})") from None
        alignment = get_face_alignment(processor)
        if alignment["method"] == "box" and alignment.get("output_size") is None:
            from ..faces.alignment import _processor_size

            alignment["output_size"] = _processor_size(processor)
    alignment = validate_face_alignment(dict(alignment))
    if alignment["method"] == "none":
        raise ValueError(f"--align {spec}: method 'none' aligns nothing")
    if alignment.get("output_size") is None:
        raise ValueError(f"--align {spec}: the alignment needs an output_size for a dataset (all images the same size)")
    return alignment


def order_five_points(points: np.ndarray) -> np.ndarray:
    """Put 5 points in ArcFace order (image-left eye, image-right eye, nose, image-left mouth corner, image-right one),
    whatever order the annotation used for the pairs."""
    points = np.asarray(points, dtype=np.float32).reshape(5, 2)
    eyes, nose, mouth = points[:2], points[2:3], points[3:5]
    eyes = eyes[np.argsort(eyes[:, 0], kind="stable")]
    mouth = mouth[np.argsort(mouth[:, 0], kind="stable")]
    return np.concatenate([eyes, nose, mouth])


def landmarks_68_to_5(points: np.ndarray) -> np.ndarray:
    """iBUG 68 points (0-based: 36-41 and 42-47 the eyes, 30 the nose tip, 48 and 54 the mouth corners) → 5 points."""
    points = np.asarray(points, dtype=np.float32).reshape(68, 2)
    five = np.stack([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]])
    return order_five_points(five)


#: Names of RAF-DB's per-image manual landmark file in ``Annotation/manual/``, in the order they are looked for: the
#: download's ``<image>_manu_attri.txt`` (5 points, then gender/race/age lines), ``<image>_manu_ldmk.txt``, and
#: ``<image>_manual.txt`` (5 points only), which hf_fer read before.
RAF_DB_MANUAL_SUFFIXES = ("_manu_attri.txt", "_manu_ldmk.txt", "_manual.txt")


def read_raf_db_manual_landmarks(path: str | os.PathLike) -> np.ndarray:
    """A RAF-DB ``Annotation/manual/`` file: 5 lines ``x y`` (eye centres, nose tip, mouth corners), then optionally
    one value per line (``*_manu_attri.txt``: gender, race, age), which are not landmarks and are skipped.

    Errors name the file and line: the image is then reported as not aligned, not given wrong points.
    """
    from .benchmarks import _read_text_lines

    path = Path(path)
    rows = [(number, line.split()) for number, line in enumerate(_read_text_lines(path), 1) if line.strip()]
    if len(rows) < 5:
        raise ValueError(f"{path}: expected 5 landmark lines 'x y' (then optional attribute lines), got {len(rows)} line(s)")
    points = []
    for number, fields in rows[:5]:
        if len(fields) != 2:
            raise ValueError(f"{path}:{number}: expected a landmark line 'x y', got {' '.join(fields)!r}")
        try:
            x, y = float(fields[0]), float(fields[1])
        except ValueError:
            raise ValueError(f"{path}:{number}: landmark {' '.join(fields)!r} is not two numbers 'x y'") from None
        if not (np.isfinite(x) and np.isfinite(y)):
            raise ValueError(f"{path}:{number}: landmark {' '.join(fields)!r} is not finite")
        points.append((x, y))
    for number, fields in rows[5:]:
        if len(fields) != 1:  # a 6th point, or another format: refuse rather than guess which 5 are meant
            raise ValueError(f"{path}:{number}: expected one attribute value per line after the 5 landmark lines, got {' '.join(fields)!r}")
    return order_five_points(np.array(points, dtype=np.float32))


@dataclass
class DatasetAligner:
    """Decode (hf_fer.image_io), align (hf_fer.faces.align_faces), encode PNG; counts what each image used."""

    alignment: dict
    detector: object | None = None
    sources: Counter = field(default_factory=Counter)
    #: why the detector was used where the benchmark ships landmarks (reason -> images), for the report
    fallbacks: Counter = field(default_factory=Counter)

    def _detect(self, image: torch.Tensor):
        if self.detector is None:
            from ..faces import RetinaFaceDetector

            # Dataset alignment is done once and every training image inherits its error, so pay for the
            # full-resolution landmark pass (within 0.1 inter-ocular distance of a full-size run).
            self.detector = RetinaFaceDetector.from_pretrained(refine_landmarks=True)
        found = self.detector.detect([image])[0]
        if found.boxes.shape[0] == 0:
            return None, None
        best = int(found.scores.argmax())
        return found.boxes[best:best + 1], None if found.landmarks is None else found.landmarks[best:best + 1]

    def __call__(self, data: bytes, name: str, landmarks: np.ndarray | None = None) -> bytes:
        from PIL import Image

        from ..faces import align_faces
        from ..image_io import load_image

        image = torch.from_numpy(np.array(load_image(data, name=name))).permute(2, 0, 1)
        boxes = None
        if landmarks is not None:
            points = torch.as_tensor(landmarks, dtype=torch.float32).reshape(1, 5, 2)
            source = "landmarks shipped with the benchmark"
        else:
            boxes, points = self._detect(image)
            if boxes is None:
                raise ValueError("no face found by the detector (image not aligned)")
            source = "RetinaFace detector" + ("" if points is not None else " (box only)")
        crop = align_faces(image, boxes=boxes, landmarks=points, alignment=self.alignment)[0]
        self.sources[source] += 1
        buffer = io.BytesIO()
        Image.fromarray(crop.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
        return buffer.getvalue()


def _affectnet_landmarks(raw_dir: Path) -> dict[str, np.ndarray]:
    """``subDirectory_filePath`` → 5 points, from the ``facial_landmarks`` column of training.csv / validation.csv."""
    from .benchmarks import _read_text_lines  # UTF-8 (BOM dropped), a bad byte named by file, line and offset

    table: dict[str, np.ndarray] = {}
    for name in ("training.csv", "validation.csv"):
        for path in list(raw_dir.glob(name)) + list(raw_dir.glob(f"*/{name}")):
            reader = csv.DictReader(_read_text_lines(path))
            columns = {c.strip().lower(): c for c in reader.fieldnames or []}
            if "facial_landmarks" not in columns or "subdirectory_filepath" not in columns:
                continue
            for row in reader:
                try:
                    values = [float(v) for v in (row[columns["facial_landmarks"]] or "").replace(",", ";").split(";") if v.strip()]
                    if len(values) == 136:
                        table[(row[columns["subdirectory_filepath"]] or "").strip()] = landmarks_68_to_5(np.array(values))
                except ValueError:
                    continue  # the detector takes over for this image (counted in the report)
    return table


def _raf_db_original(file_name: str, raw_dir: Path) -> tuple[Path, Path | None] | None:
    """RAF-DB example path → (original image, manual landmark file or None)."""
    path = raw_dir / file_name
    parts = path.parts
    if "Image" not in parts:
        return None
    root = Path(*parts[: parts.index("Image")])
    stem, suffix = os.path.splitext(path.name)
    if stem.endswith("_aligned"):
        stem = stem[: -len("_aligned")]
    original = root / "Image" / "original" / f"{stem}{suffix}"
    if not original.is_file():
        return None
    manual = root / "Annotation" / "manual"
    for landmark_suffix in RAF_DB_MANUAL_SUFFIXES:
        if (manual / f"{stem}{landmark_suffix}").is_file():
            return original, manual / f"{stem}{landmark_suffix}"
    return original, None


def align_raw_benchmark(raw, alignment: dict, aligner: DatasetAligner | None = None):
    """Wrap a :class:`~hf_fer.data.benchmarks.RawBenchmark` so every example's bytes are the aligned face (PNG).

    Images that cannot be aligned (no landmarks and no face found, undecodable) raise from ``read_bytes`` and
    are reported as unreadable by the builder, with the reason; nothing is dropped silently.
    """
    aligner = aligner or DatasetAligner(alignment)
    benchmark = raw.benchmark
    affectnet_csv = benchmark.startswith("affectnet") and raw.layout == "affectnet-csv"
    affectnet = _affectnet_landmarks(raw.raw_dir) if affectnet_csv else {}

    def wrap(example) -> object:
        landmarks: Callable[[], np.ndarray | None] = lambda: None
        read = example.read_bytes
        fallback = None
        if benchmark == "raf-db":
            found = _raf_db_original(example.file_name, raw.raw_dir)
            if found is None:
                fallback = "no Image/original/ file"
            else:
                original, manual = found
                read = original.read_bytes
                if manual is not None:
                    landmarks = lambda: read_raf_db_manual_landmarks(manual)  # noqa: E731
                else:
                    fallback = "no landmark file Annotation/manual/<image>{" + ",".join(RAF_DB_MANUAL_SUFFIXES) + "}"
        elif affectnet_csv:
            key = "/".join(Path(example.file_name).parts[-2:])
            points = affectnet.get(key)
            if points is not None:
                landmarks = lambda: points  # noqa: E731
            else:
                fallback = "no usable facial_landmarks (136 numbers) in training.csv/validation.csv"

        def read_aligned() -> bytes:
            if fallback is not None:  # counted even if the detector then finds no face
                aligner.fallbacks[fallback] += 1
            return aligner(read(), example.file_name, landmarks())

        return replace(example, read_bytes=read_aligned)

    def split_reader(reader):
        def read(report) -> Iterator:
            for example in reader(report):
                yield wrap(example)
        return read

    aligned = replace(raw, splits={name: split_reader(reader) for name, reader in raw.splits.items()})
    aligned.notes = list(raw.notes) + [f"faces aligned by hf_fer: {json.dumps(alignment)}"]
    return aligned, aligner
