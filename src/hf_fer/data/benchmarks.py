"""Raw FER benchmark downloads -> ``datasets.DatasetDict`` (``prepare-dataset``).

Training and evaluation read ``datasets``; users arrive with the raw downloads, whose layouts and
class numbering differ per benchmark. Loading scripts are no longer supported by ``datasets`` and the
licences forbid redistribution, so hf_fer ships *builders*: readers that walk a raw layout, validate
every image while reading it, and stream the examples into ``Dataset.from_generator`` (constant
memory: one image is decoded at a time, Arrow batches are flushed to disk).

Every dataset gets ``image`` (:class:`datasets.Image`, the original file bytes, FER2013 pixel strings
as 48x48 grayscale PNG) and ``label`` (:class:`datasets.ClassLabel` with the benchmark's names from
:mod:`hf_fer.labels`), plus what the benchmark offers:

===============  ==================================================  =================================
benchmark        layouts (auto-detected; ``--layout`` to force)      extra columns
===============  ==================================================  =================================
raf-db           ``raf-db-list`` (EmoLabel/list_patition_label.txt   -
                 + Image/aligned), ``class-folders``
affectnet-7/-8   ``affectnet-csv`` (training.csv/validation.csv),    ``valence``, ``arousal`` (csv, npy),
                 ``affectnet-npy`` (train_set/, val_set/),           ``face_box`` (csv: x, y, w, h)
                 ``class-folders``
fer2013          ``fer2013-csv`` (emotion, pixels, Usage),           -
                 ``class-folders``
ferplus          ``ferplus-csv`` (fer2013new.csv + fer2013.csv),     ``votes`` (10), ``soft_label`` (8)
                 ``ferplus-folders`` (fer2013new.csv + FER2013Train/  (jin2: one-hot ``soft_label``)
                 FER2013Valid/FER2013Test), ``ferplus-jin2``
                 (fer2013new_jin2.csv + train/valid/test)
sfew, caer-s     ``class-folders``                                   -
===============  ==================================================  =================================

Split naming: ``train`` / ``validation`` / ``test``. FER2013 and FERPlus: Training -> train,
PublicTest -> validation, PrivateTest -> test (the official test sets). AffectNet's official
validation set is the test set of the literature and is written as ``test``. In class-folder layouts
a ``val``/``valid``/``validation`` folder becomes ``test`` when there is no ``test`` folder (POSTER V2's
RAF-DB/AffectNet layouts, SFEW's Train/Val); the report records where each split came from.
"""
from __future__ import annotations

import argparse
import codecs
import csv
import io
import itertools
import json
import os
import re
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .._staging import recover_interrupted, staging_folder, swap_into_place
from ..labels import BENCHMARKS, canonical_name, get_label_names
from ..labels import benchmark_key as _labels_benchmark_key  # alias resolution lives with the label spaces
from .validation import DuplicateTracker, ValidationReport, inspect_image_bytes

__all__ = [
    "LAYOUTS",
    "SPLIT_ORDER",
    "BenchmarkError",
    "StrictValidationError",
    "RawExample",
    "RawBenchmark",
    "ferplus_majority_label",
    "ferplus_soft_label",
    "read_raw_benchmark",
    "build_benchmark",
    "prepare_dataset",
    "load_fer_dataset",
    "main",
]

SPLIT_ORDER = ("train", "validation", "test")
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}

#: AffectNet expression ids 8-10 are not expressions; the benchmark drops them (ecosystem.md §7).
AFFECTNET_NON_EXPRESSIONS = {8: "none", 9: "uncertain", 10: "no-face"}
_AFFECTNET_NON_EXPRESSION_NAMES = {"none", "uncertain", "no-face", "noface", "no_face", "no face", "nonface", "non-face"}

#: fer2013new.csv vote columns, in file order (8 emotions in the ferplus label order, then unknown, NF).
FERPLUS_VOTE_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF")

#: FER2013 ``Usage`` values -> split names (PrivateTest is the official test set).
FER2013_USAGE_TO_SPLIT = {"training": "train", "publictest": "validation", "privatetest": "test"}

_SPLIT_DIR_NAMES = {
    "train": "train", "training": "train",
    "val": "validation", "valid": "validation", "validation": "validation",
    "test": "test", "testing": "test",
}

# Rows written per Arrow record batch: keeps the writer's buffer small even for large AffectNet JPEGs.
_WRITER_BATCH_SIZE = 100


class BenchmarkError(ValueError):
    """The raw layout cannot be read (wrong directory, unknown benchmark/layout, malformed label file)."""


class StrictValidationError(BenchmarkError):
    """``--strict`` was given and validation found issues (the report says which)."""

    def __init__(self, message: str, report: ValidationReport):
        super().__init__(message)
        self.report = report


@dataclass
class RawExample:
    """One labelled image of a raw layout, not yet read from disk.

    ``read_bytes`` returns the encoded image (raising ``FileNotFoundError`` for a missing file and
    ``ValueError``/``OSError`` for unusable data), so images are only loaded when they are written.
    """

    file_name: str
    label: int
    read_bytes: Callable[[], bytes]
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class RawBenchmark:
    """A raw layout, resolved: the split readers plus what the builder needs to know about them.

    ``splits[name](report)`` yields :class:`RawExample` for that split and reports label-level
    problems (out-of-range ids, malformed rows, exclusions) itself.
    """

    benchmark: str
    layout: str
    raw_dir: Path
    label_names: list[str]
    splits: dict[str, Callable[[ValidationReport], Iterator[RawExample]]]
    extra_features: dict[str, datasets.features.features.FeatureType] = field(default_factory=dict)
    split_sources: dict[str, str] = field(default_factory=dict)
    split_sizes: dict[str, int | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)

    @property
    def features(self) -> datasets.Features:
        return datasets.Features(
            {"image": datasets.Image(), "label": datasets.ClassLabel(names=list(self.label_names)), **self.extra_features}
        )


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------
def _benchmark_key(benchmark: str) -> str:
    """Canonical benchmark key (``"RAF-DB"``, ``"rafdb"`` -> ``"raf-db"``), or a clear error."""
    try:
        return _labels_benchmark_key(benchmark)
    except KeyError:
        raise BenchmarkError(f"unknown benchmark {benchmark!r}; expected one of {', '.join(BENCHMARKS)}") from None


def _file_reader(path: Path) -> Callable[[], bytes]:
    return path.read_bytes


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _child(directory: Path, *names: str) -> Path | None:
    """The first existing child of ``directory`` matching one of ``names`` (case-insensitive)."""
    if not directory.is_dir():
        return None
    wanted = [name.lower() for name in names]
    with os.scandir(directory) as entries:
        children = {entry.name.lower(): entry.name for entry in entries if entry.name.lower() in wanted}
    for name in wanted:
        if name in children:
            return directory / children[name]
    return None


def _subdirectories(directory: Path) -> list[Path]:
    # scandir's entry types come from the directory listing itself: no stat() per image file.
    with os.scandir(directory) as entries:
        return sorted(Path(entry.path) for entry in entries if entry.is_dir() and not entry.name.startswith("."))


def _find_file(root: Path, names: Sequence[str], max_depth: int = 2) -> Path | None:
    """Find one of ``names`` in ``root`` or up to ``max_depth`` directory levels below it (breadth first)."""
    level = [root]
    for depth in range(max_depth + 1):
        for directory in level:
            found = _child(directory, *names)
            if found is not None and found.is_file():
                return found
        if depth < max_depth:
            level = [sub for directory in level for sub in _subdirectories(directory)]
    return None


def _text_lines(path: Path, handle) -> Iterator[str]:
    """Decode a binary file handle line by line as UTF-8 (a leading BOM is dropped). Lines end with ``\n``,
    ``\r\n`` or a bare ``\r`` (files saved with classic Mac line endings).

    Decoding per line, instead of through a text handle, lets a bad byte be reported with its file, line
    and byte offset; inside ``Dataset.from_generator`` a bare ``UnicodeDecodeError`` names none of them.
    """
    offset, number = 0, 0
    for chunk_number, chunk in enumerate(handle, 1):
        if chunk_number == 1 and chunk.startswith(codecs.BOM_UTF8):
            chunk, offset = chunk[len(codecs.BOM_UTF8):], len(codecs.BOM_UTF8)
        for raw in _BARE_CR.split(chunk) if b"\r" in chunk else (chunk,):
            if not raw:
                continue
            number += 1
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise BenchmarkError(
                    f"{path}:{number}: not UTF-8 text: byte 0x{raw[error.start]:02x} at byte offset {offset + error.start} "
                    f"of the file ({error.reason}); expected a UTF-8 (or ASCII) file"
                ) from None
            offset += len(raw)


_BARE_CR = re.compile(rb"(?<=\r)(?!\n)")  # the position after a carriage return that is not followed by a newline


def _read_text_lines(path: Path) -> Iterator[str]:
    """UTF-8 lines of a label/annotation text file, with a precise error on a non-UTF-8 byte."""
    with open(path, "rb") as handle:
        yield from _text_lines(path, handle)


def _open_csv(path: Path) -> Iterator[dict[str, str]]:
    """Stream a CSV file as dicts with stripped, lower-case header names (``" Usage"`` -> ``"usage"``).

    Each dict also carries ``__line__`` (line number, for messages) and ``__fields__``/``__expected__``
    (field counts of the row and of the header), so readers can report malformed rows precisely.
    """
    reader = csv.reader(_read_text_lines(path))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise BenchmarkError(f"{path}: empty file") from None
    for row in reader:
        if not row or all(not cell.strip() for cell in row):
            continue
        yield dict(zip(header, row)) | {"__line__": str(reader.line_num), "__fields__": str(len(row)), "__expected__": str(len(header))}


def _csv_header(path: Path) -> list[str]:
    return [h.strip().lower() for h in next(csv.reader(_read_text_lines(path)), [])]


def _require_columns(path: Path, required: Sequence[str]) -> list[str]:
    header = _csv_header(path)
    missing = [c for c in required if c.lower() not in header]
    if missing:
        raise BenchmarkError(f"{path}: missing column(s) {missing}; expected {list(required)}, got {header}")
    return header


def fer2013_pixels_to_png(pixels: str, size: int = 48) -> bytes:
    """Encode a FER2013 ``pixels`` string (``size*size`` space-separated 0-255 ints) as a grayscale PNG."""
    values = pixels.split()
    if len(values) != size * size:
        raise ValueError(f"pixel string has {len(values)} values, expected {size * size} ({size}x{size})")
    try:
        array = np.asarray([int(v) for v in values], dtype=np.int64)
    except ValueError:
        raise ValueError("pixel string contains non-integer values") from None
    if array.min() < 0 or array.max() > 255:
        raise ValueError(f"pixel values must be 0..255, got {array.min()}..{array.max()}")
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8).reshape(size, size), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# FERPlus label rules
# ---------------------------------------------------------------------------------------------
def ferplus_majority_label(votes: Sequence[int]) -> tuple[int | None, str]:
    """FER+ "majority" rule on the 10 vote counts of fer2013new.csv.

    Votes of a single annotator are treated as outliers and removed (a count of 1 becomes 0); the image
    is kept only if its most voted column then holds *strictly more than half* of the remaining votes
    and that column is an emotion, not ``unknown`` or ``NF`` (not a face). Returns ``(label, "")`` with
    the label in the ferplus order, or ``(None, reason)`` with reason ``no_votes``, ``no_majority``,
    ``majority_unknown`` or ``majority_not_face``.
    """
    if len(votes) != len(FERPLUS_VOTE_COLUMNS):
        raise ValueError(f"expected {len(FERPLUS_VOTE_COLUMNS)} vote counts, got {len(votes)}")
    kept = [v if v > 1 else 0 for v in votes]
    total = sum(kept)
    if total == 0:
        return None, "no_votes"
    top = int(np.argmax(kept))
    if 2 * kept[top] <= total:
        return None, "no_majority"
    if top == 8:
        return None, "majority_unknown"
    if top == 9:
        return None, "majority_not_face"
    return top, ""


def ferplus_soft_label(votes: Sequence[int]) -> list[float]:
    """Annotator distribution over the 8 FERPlus emotions: raw emotion votes / their sum.

    ``unknown`` and ``NF`` votes are left out and no outlier removal is applied, so this is the plain
    vote distribution (the FER+ "probability"/cross-entropy targets before their top-3 truncation).
    """
    emotions = [float(v) for v in votes[:8]]
    total = sum(emotions)
    return [v / total for v in emotions] if total > 0 else [0.0] * 8


# ---------------------------------------------------------------------------------------------
# Class-folder layouts (all benchmarks)
# ---------------------------------------------------------------------------------------------
@dataclass
class _FolderLabel:
    index: int | None = None
    excluded: str | None = None
    problem: str | None = None


def _resolve_folder_label(folder: str, benchmark: str, names: list[str], one_based: bool) -> _FolderLabel:
    """Map a class-folder name (``"Happy"``, ``"3"``, ``"03"``) to the benchmark's label index."""
    affectnet = benchmark.startswith("affectnet")
    if folder.strip().isdigit():
        number = int(folder)
        native = number - 1 if one_based else number
        if 0 <= native < len(names):
            return _FolderLabel(index=native)
        if affectnet and number in AFFECTNET_NON_EXPRESSIONS:
            return _FolderLabel(excluded=f"affectnet_{AFFECTNET_NON_EXPRESSIONS[number]}")
        if benchmark == "affectnet-7" and number == 7:
            return _FolderLabel(excluded="affectnet_contempt_not_in_7_classes")
        first = 1 if one_based else 0
        return _FolderLabel(problem=f"class folder '{folder}' is id {number}, outside {first}..{len(names) - 1 + first} of {benchmark}")
    if affectnet and folder.strip().lower() in _AFFECTNET_NON_EXPRESSION_NAMES:
        return _FolderLabel(excluded=f"affectnet_{folder.strip().lower().replace('_', '-').replace(' ', '-')}")
    try:
        name = canonical_name(folder)
    except KeyError:
        return _FolderLabel(problem=f"class folder '{folder}' is not an expression name")
    if name in names:
        return _FolderLabel(index=names.index(name))
    if benchmark == "affectnet-7" and name == "contempt":
        return _FolderLabel(excluded="affectnet_contempt_not_in_7_classes")
    return _FolderLabel(problem=f"class folder '{folder}' ({name}) is not a class of {benchmark} ({', '.join(names)})")


def _find_split_dirs(raw_dir: Path) -> tuple[dict[str, Path], list[str]]:
    """Split folders of a class-folder layout (descending into a single wrapper folder if needed)."""
    root = raw_dir
    for _ in range(2):
        subdirs = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
        found: dict[str, Path] = {}
        for directory in subdirs:
            split = _SPLIT_DIR_NAMES.get(directory.name.lower())
            if split is None:
                continue
            if split in found:
                raise BenchmarkError(f"{raw_dir}: both '{found[split].name}' and '{directory.name}' look like the {split} split")
            found[split] = directory
        if found:
            notes = [f"ignored folder '{_relative(d, raw_dir)}' (not a split name)" for d in subdirs if d not in found.values()]
            return found, notes
        if len(subdirs) != 1:
            break
        root = subdirs[0]
    raise BenchmarkError(
        f"{raw_dir}: no split folders found; a class-folder layout needs train/ and test/ (or val/, valid/, "
        f"validation/) folders, each holding one folder per class"
    )


def _class_folders(raw_dir: Path, benchmark: str) -> RawBenchmark:
    names = get_label_names(benchmark)
    split_dirs, notes = _find_split_dirs(raw_dir)
    split_sources = {}
    if "validation" in split_dirs and "test" not in split_dirs:
        split_dirs["test"] = split_dirs.pop("validation")
        notes.append(f"no test/ folder: '{split_dirs['test'].name}/' is written as the test split")
    raw = RawBenchmark(benchmark, "class-folders", raw_dir, names, {}, notes=notes)

    class_dirs: dict[str, list[Path]] = {}
    for split, directory in split_dirs.items():
        class_dirs[split] = _subdirectories(directory)
        for loose in sorted(p for p in directory.iterdir() if p.is_file()):
            raw.ignored_files.append(f"{_relative(loose, raw_dir)} (file outside any class folder)")
        split_sources[split] = f"{_relative(directory, raw_dir)}/<class>/"
    numeric = {d.name.strip() for dirs in class_dirs.values() for d in dirs if d.name.strip().isdigit()}
    # RAF-DB numbers its classes 1..7; folders 0..6 mean someone already subtracted one.
    one_based = bool(benchmark == "raf-db" and numeric and 0 not in {int(n) for n in numeric})
    if numeric:
        numbering = "1-based (RAF-DB's own 1..7)" if one_based else "0-based"
        notes.append(f"numeric class folders read as {numbering} ids in the {benchmark} order: {', '.join(names)}")

    def image_files(class_dir: Path) -> list[str]:
        """Image paths under ``class_dir`` (sorted, relative to raw_dir, as plain strings to stay light)."""
        files = []
        for folder, subfolders, file_names in os.walk(class_dir):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            for file_name in sorted(file_names):
                if file_name.startswith("."):
                    continue
                relative = _relative(Path(folder, file_name), raw_dir)
                if os.path.splitext(file_name)[1].lower() in IMAGE_EXTENSIONS:
                    files.append(relative)
                else:
                    raw.ignored_files.append(f"{relative} (not an image extension)")
        return files

    # List every split up front (paths only: cheap) so progress bars know their totals.
    listing: dict[str, list[tuple[str, _FolderLabel, list[str]]]] = {}
    for split in SPLIT_ORDER:
        if split not in class_dirs:
            continue
        listing[split] = [
            (class_dir.name, _resolve_folder_label(class_dir.name, benchmark, names, one_based), image_files(class_dir))
            for class_dir in class_dirs[split]
        ]
        raw.split_sizes[split] = sum(len(files) for _, resolved, files in listing[split] if resolved.index is not None)

    def reader(split: str) -> Callable[[ValidationReport], Iterator[RawExample]]:
        def read(report: ValidationReport) -> Iterator[RawExample]:
            for class_name, resolved, files in listing[split]:
                for relative in files:
                    if resolved.excluded:
                        report.exclude(resolved.excluded, split, relative, f"class folder '{class_name}'")
                    elif resolved.problem:
                        report.add_issue("label_out_of_range", split, relative, resolved.problem)
                    else:
                        yield RawExample(relative, resolved.index, _file_reader(raw_dir / relative))

        return read

    raw.splits = {split: reader(split) for split in listing}
    raw.split_sources = split_sources
    return raw


# ---------------------------------------------------------------------------------------------
# RAF-DB: EmoLabel/list_patition_label.txt + Image/aligned/
# ---------------------------------------------------------------------------------------------
def _raf_db_list(raw_dir: Path, benchmark: str) -> RawBenchmark:
    names = get_label_names("raf-db")
    label_file = _find_file(raw_dir, ["list_patition_label.txt", "list_partition_label.txt"])
    if label_file is None:
        raise BenchmarkError(f"{raw_dir}: EmoLabel/list_patition_label.txt not found")
    root = label_file.parent.parent if label_file.parent.name.lower() == "emolabel" else label_file.parent
    image_root = root / "Image"
    aligned = _child(image_root, "aligned")
    original = _child(image_root, "original")
    notes = []
    if aligned is None and original is not None:
        notes.append("Image/aligned/ not found: reading Image/original/ (un-aligned faces)")
    image_dir = aligned or original or (root / "Image" / "aligned")

    def image_path(name: str) -> Path:
        if image_dir.name.lower() == "aligned":
            stem, suffix = os.path.splitext(name)
            return image_dir / f"{stem}_aligned{suffix or '.jpg'}"
        return image_dir / name

    def reader(split: str) -> Callable[[ValidationReport], Iterator[RawExample]]:
        def read(report: ValidationReport) -> Iterator[RawExample]:
            label_name = _relative(label_file, raw_dir)
            for line_number, line in enumerate(_read_text_lines(label_file), 1):
                fields = line.split()
                if not fields:
                    continue
                where = f"{label_name}:{line_number}"
                if len(fields) != 2:
                    if split == "train":  # report each bad line once, not once per split
                        report.add_issue("malformed_row", None, where, f"expected '<image> <label>', got {line.strip()!r}")
                    continue
                name, label = fields
                row_split = name.split("_", 1)[0].lower()
                if row_split not in ("train", "test"):
                    if split == "train":
                        report.add_issue("malformed_row", None, where, f"image name {name!r} starts with neither 'train' nor 'test'")
                    continue
                if row_split != split:
                    continue
                path = image_path(name)
                relative = _relative(path, raw_dir)
                if not label.isdigit() or not 1 <= int(label) <= len(names):
                    report.add_issue("label_out_of_range", split, relative, f"{where}: label {label!r} outside 1..{len(names)}")
                    continue
                yield RawExample(relative, int(label) - 1, _file_reader(path))

        return read

    return RawBenchmark(
        benchmark, "raf-db-list", raw_dir, names, {"train": reader("train"), "test": reader("test")},
        split_sources={s: f"{_relative(label_file, raw_dir)} ({s}_* rows), images in {_relative(image_dir, raw_dir)}/" for s in ("train", "test")},
        notes=notes,
    )


# ---------------------------------------------------------------------------------------------
# AffectNet
# ---------------------------------------------------------------------------------------------
def _affectnet_label(value: str, benchmark: str, names: list[str]) -> _FolderLabel:
    try:
        number = int(float(value))
    except ValueError:
        return _FolderLabel(problem=f"expression {value!r} is not an integer id")
    if 0 <= number < len(names):
        return _FolderLabel(index=number)
    if number in AFFECTNET_NON_EXPRESSIONS:
        return _FolderLabel(excluded=f"affectnet_{AFFECTNET_NON_EXPRESSIONS[number]}")
    if benchmark == "affectnet-7" and number == 7:
        return _FolderLabel(excluded="affectnet_contempt_not_in_7_classes")
    return _FolderLabel(problem=f"expression id {number} outside 0..10 (AffectNet ids)")


def _affectnet_valence_arousal(valence: str, arousal: str) -> dict[str, float]:
    values = {"valence": float(valence), "arousal": float(arousal)}
    if any(not np.isfinite(v) for v in values.values()):
        raise ValueError(f"valence/arousal must be finite, got {values}")
    return values


_AFFECTNET_VA_FEATURES = {"valence": datasets.Value("float32"), "arousal": datasets.Value("float32")}


def _affectnet_csv(raw_dir: Path, benchmark: str) -> RawBenchmark:
    names = get_label_names(benchmark)
    files = {"train": _find_file(raw_dir, ["training.csv"]), "test": _find_file(raw_dir, ["validation.csv"])}
    files = {split: path for split, path in files.items() if path is not None}
    if not files:
        raise BenchmarkError(f"{raw_dir}: AffectNet training.csv / validation.csv not found")
    image_root = raw_dir
    for candidate in ("Manually_Annotated_Images", "Manually_Annotated/Manually_Annotated_Images", "Manually_Annotated_compressed/Manually_Annotated_Images"):
        if (raw_dir / candidate).is_dir():
            image_root = raw_dir / candidate
            break
    for path in files.values():
        _require_columns(path, ["subDirectory_filePath", "expression"])
    with_va = all({"valence", "arousal"} <= set(_csv_header(path)) for path in files.values())
    box_columns = ["face_x", "face_y", "face_width", "face_height"]
    with_box = all(set(box_columns) <= set(_csv_header(path)) for path in files.values())

    def reader(split: str) -> Callable[[ValidationReport], Iterator[RawExample]]:
        def read(report: ValidationReport) -> Iterator[RawExample]:
            label_file = files[split]
            for row in _open_csv(label_file):
                where = f"{_relative(label_file, raw_dir)}:{row['__line__']}"
                if row["__fields__"] != row["__expected__"]:
                    report.add_issue("malformed_row", split, where, f"{row['__fields__']} fields, header has {row['__expected__']}")
                    continue
                relative = row["subdirectory_filepath"].strip()
                path = image_root / relative
                shown = _relative(path, raw_dir)
                resolved = _affectnet_label(row["expression"].strip(), benchmark, names)
                if resolved.excluded:
                    report.exclude(resolved.excluded, split, shown, f"expression {row['expression'].strip()}")
                    continue
                if resolved.problem:
                    report.add_issue("label_out_of_range", split, shown, f"{where}: {resolved.problem}")
                    continue
                extras = {}
                if with_va:
                    try:
                        extras = _affectnet_valence_arousal(row["valence"], row["arousal"])
                    except ValueError as error:
                        report.add_issue("malformed_row", split, where, f"bad valence/arousal: {error}")
                        continue
                if with_box:
                    try:
                        extras["face_box"] = [int(float(row[c])) for c in box_columns]
                    except ValueError:
                        report.add_issue("malformed_row", split, where, f"bad face box {[row[c] for c in box_columns]}")
                        continue
                yield RawExample(shown, resolved.index, _file_reader(path), extras)

        return read

    notes = ["AffectNet's official validation set (validation.csv) is written as the test split"] if "test" in files else []
    return RawBenchmark(
        benchmark, "affectnet-csv", raw_dir, names, {s: reader(s) for s in SPLIT_ORDER if s in files},
        # face_box: AffectNet's face_x, face_y, face_width, face_height; images are stored uncropped.
        extra_features=(dict(_AFFECTNET_VA_FEATURES) if with_va else {}) | ({"face_box": datasets.List(datasets.Value("int32"), length=4)} if with_box else {}),
        split_sources={s: f"{_relative(p, raw_dir)}, images in {_relative(image_root, raw_dir) if image_root != raw_dir else '.'}/" for s, p in files.items()},
        notes=notes,
    )


def _affectnet_npy(raw_dir: Path, benchmark: str) -> RawBenchmark:
    """AffectNet's ``train_set/`` / ``val_set/`` release: ``images/<id>.jpg`` + ``annotations/<id>_exp.npy``."""
    names = get_label_names(benchmark)
    split_dirs = {"train": _child(raw_dir, "train_set"), "test": _child(raw_dir, "val_set")}
    split_dirs = {s: d for s, d in split_dirs.items() if d is not None}
    if not split_dirs:
        raise BenchmarkError(f"{raw_dir}: AffectNet train_set/ and val_set/ not found")
    raw = RawBenchmark(benchmark, "affectnet-npy", raw_dir, names, {}, extra_features=dict(_AFFECTNET_VA_FEATURES))
    listing: dict[str, list[Path]] = {}
    for split, directory in split_dirs.items():
        images = _child(directory, "images")
        if images is None:
            raise BenchmarkError(f"{directory}: images/ folder not found")
        listing[split] = []
        for path in sorted(images.iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                listing[split].append(path)
            elif not path.name.startswith("."):
                raw.ignored_files.append(f"{_relative(path, raw_dir)} (not an image extension)")
        raw.split_sizes[split] = len(listing[split])
        raw.split_sources[split] = f"{_relative(images, raw_dir)}/ + {_relative(directory, raw_dir)}/annotations/<id>_exp.npy"

    def load_scalar(path: Path) -> str:
        return str(np.load(path, allow_pickle=False).reshape(-1)[0])

    def reader(split: str) -> Callable[[ValidationReport], Iterator[RawExample]]:
        def read(report: ValidationReport) -> Iterator[RawExample]:
            for path in listing[split]:
                annotations = path.parent.parent / "annotations"
                shown = _relative(path, raw_dir)
                try:
                    expression = load_scalar(annotations / f"{path.stem}_exp.npy")
                    extras = _affectnet_valence_arousal(load_scalar(annotations / f"{path.stem}_val.npy"), load_scalar(annotations / f"{path.stem}_aro.npy"))
                except FileNotFoundError as error:
                    report.add_issue("missing_file", split, shown, f"annotation {_relative(Path(error.filename), raw_dir)} not found")
                    continue
                except ValueError as error:
                    report.add_issue("malformed_row", split, shown, f"bad annotation: {error}")
                    continue
                resolved = _affectnet_label(expression, benchmark, names)
                if resolved.excluded:
                    report.exclude(resolved.excluded, split, shown, f"expression {expression}")
                elif resolved.problem:
                    report.add_issue("label_out_of_range", split, shown, resolved.problem)
                else:
                    yield RawExample(shown, resolved.index, _file_reader(path), extras)

        return read

    raw.splits = {s: reader(s) for s in SPLIT_ORDER if s in listing}
    if "test" in listing:
        raw.notes.append("AffectNet's official validation set (val_set/) is written as the test split")
    return raw


# ---------------------------------------------------------------------------------------------
# FER2013 (pixel strings) and FERPlus
# ---------------------------------------------------------------------------------------------
def _fer2013_csv_file(raw_dir: Path) -> Path | None:
    return _find_file(raw_dir, ["fer2013.csv", "icml_face_data.csv"])


def _fer2013_csv(raw_dir: Path, benchmark: str) -> RawBenchmark:
    names = get_label_names("fer2013")
    label_file = _fer2013_csv_file(raw_dir)
    if label_file is None:
        raise BenchmarkError(f"{raw_dir}: fer2013.csv not found")
    _require_columns(label_file, ["emotion", "pixels", "Usage"])
    shown_file = _relative(label_file, raw_dir)

    def reader(split: str) -> Callable[[ValidationReport], Iterator[RawExample]]:
        def read(report: ValidationReport) -> Iterator[RawExample]:
            for row_index, row in enumerate(_open_csv(label_file)):
                usage = row.get("usage", "").strip()
                row_split = FER2013_USAGE_TO_SPLIT.get(usage.lower())
                where = f"{shown_file}:{row['__line__']}"
                if row_split is None:
                    if split == "train":
                        report.add_issue("malformed_row", None, where, f"Usage {usage!r} is not Training, PublicTest or PrivateTest")
                    continue
                if row_split != split:
                    continue
                file_name = f"fer{row_index:07d}.png"
                emotion = row.get("emotion", "").strip()
                if not emotion.isdigit() or int(emotion) >= len(names):
                    report.add_issue("label_out_of_range", split, file_name, f"{where}: emotion {emotion!r} outside 0..{len(names) - 1}")
                    continue
                pixels = row.get("pixels", "")
                yield RawExample(file_name, int(emotion), lambda pixels=pixels: fer2013_pixels_to_png(pixels))

        return read

    return RawBenchmark(
        benchmark, "fer2013-csv", raw_dir, names, {s: reader(s) for s in SPLIT_ORDER},
        split_sources={"train": f"{shown_file} Usage=Training", "validation": f"{shown_file} Usage=PublicTest", "test": f"{shown_file} Usage=PrivateTest"},
        notes=["image names are fer<row index>.png, the row index in the csv (FERPlus uses the same names)"],
    )


_FERPLUS_FOLDERS = {
    "train": ("FER2013Train", "train", "Training"),
    "validation": ("FER2013Valid", "valid", "val", "validation", "PublicTest"),
    "test": ("FER2013Test", "test", "PrivateTest"),
}


def _parse_votes(row: dict[str, str]) -> list[int]:
    votes = []
    for column in FERPLUS_VOTE_COLUMNS:
        value = row.get(column.lower(), "").strip()
        if not value.isdigit():
            raise ValueError(f"vote column {column!r} is {value!r}, expected a non-negative integer")
        votes.append(int(value))
    return votes


_FERPLUS_FEATURES = {
    "votes": datasets.List(datasets.Value("int32"), length=len(FERPLUS_VOTE_COLUMNS)),
    "soft_label": datasets.List(datasets.Value("float32"), length=8),
}
_FERPLUS_NOTE = (
    "labels follow the FER+ majority rule (single votes removed as outliers; kept only if the top column "
    "has > 1/2 of the remaining votes and is not unknown/NF); images without a majority or whose majority is "
    "unknown/NF are excluded and listed. votes = the 10 counts (" + ", ".join(FERPLUS_VOTE_COLUMNS) + "); "
    "soft_label = the 8 emotion votes normalised to sum 1. Upstream VT-NR used fer2013new_jin2.csv, whose "
    "labels differ for ~1% of images."
)


def _ferplus(raw_dir: Path, benchmark: str, layout: str) -> RawBenchmark:
    names = get_label_names("ferplus")
    vote_file = _find_file(raw_dir, ["fer2013new.csv"])
    if vote_file is None:
        raise BenchmarkError(f"{raw_dir}: fer2013new.csv not found")
    _require_columns(vote_file, ["Usage", "Image name", *FERPLUS_VOTE_COLUMNS])
    shown_votes = _relative(vote_file, raw_dir)
    pixel_file = _fer2013_csv_file(raw_dir) if layout == "ferplus-csv" else None
    if layout == "ferplus-csv":
        if pixel_file is None:
            raise BenchmarkError(f"{raw_dir}: layout ferplus-csv needs fer2013.csv next to fer2013new.csv")
        _require_columns(pixel_file, ["pixels", "Usage"])
    folders: dict[str, Path] = {}
    if layout == "ferplus-folders":
        for split, candidates in _FERPLUS_FOLDERS.items():
            folder = _child(vote_file.parent, *candidates) or _child(raw_dir, *candidates)
            if folder is not None:
                folders[split] = folder
        if not folders:
            raise BenchmarkError(f"{raw_dir}: no FER2013Train/, FER2013Valid/ or FER2013Test/ image folder found")

    def rows() -> Iterator[tuple[int, dict[str, str], dict[str, str] | None]]:
        vote_rows = _open_csv(vote_file)
        if pixel_file is None:
            for index, row in enumerate(vote_rows):
                yield index, row, None
            return
        for index, pair in enumerate(itertools.zip_longest(vote_rows, _open_csv(pixel_file))):
            if pair[0] is None or pair[1] is None:
                raise BenchmarkError(
                    f"{shown_votes} and {_relative(pixel_file, raw_dir)} must have one row per image in the same order; "
                    f"they differ in length (one ends at row {index})"
                )
            yield index, pair[0], pair[1]

    def reader(split: str) -> Callable[[ValidationReport], Iterator[RawExample]]:
        def read(report: ValidationReport) -> Iterator[RawExample]:
            for index, row, pixel_row in rows():
                where = f"{shown_votes}:{row['__line__']}"
                usage = row.get("usage", "").strip()
                row_split = FER2013_USAGE_TO_SPLIT.get(usage.lower())
                if row_split is None:
                    if split == "train":
                        report.add_issue("malformed_row", None, where, f"Usage {usage!r} is not Training, PublicTest or PrivateTest")
                    continue
                if row_split != split:
                    continue
                if pixel_row is not None and pixel_row.get("usage", "").strip().lower() != usage.lower():
                    report.add_issue("malformed_row", split, where, f"Usage {usage!r} differs from fer2013.csv row {index} ({pixel_row.get('usage')!r}); files are not aligned")
                    continue
                image_name = row.get("image name", "").strip()
                file_name = image_name or f"fer{index:07d}.png"
                if not image_name:
                    report.exclude("ferplus_removed_image", split, file_name, f"{where}: no image name (removed by FER+)")
                    continue
                try:
                    votes = _parse_votes(row)
                except ValueError as error:
                    report.add_issue("malformed_row", split, file_name, f"{where}: {error}")
                    continue
                label, reason = ferplus_majority_label(votes)
                if label is None:
                    report.exclude(f"ferplus_{reason}", split, file_name, f"votes {votes}")
                    continue
                extras = {"votes": votes, "soft_label": ferplus_soft_label(votes)}
                if pixel_row is not None:
                    read_bytes = lambda pixels=pixel_row.get("pixels", ""): fer2013_pixels_to_png(pixels)  # noqa: E731
                    shown = file_name
                else:
                    folder = folders.get(split)
                    path = (folder / image_name) if folder is not None else (vote_file.parent / _FERPLUS_FOLDERS[split][0] / image_name)
                    read_bytes, shown = _file_reader(path), _relative(path, raw_dir)
                yield RawExample(shown, label, read_bytes, extras)

        return read

    sources = {
        split: f"{shown_votes} Usage={usage}" + (f", pixels from {_relative(pixel_file, raw_dir)}" if pixel_file else f", images in {_relative(folders[split], raw_dir) if split in folders else _FERPLUS_FOLDERS[split][0]}/")
        for split, usage in (("train", "Training"), ("validation", "PublicTest"), ("test", "PrivateTest"))
    }
    return RawBenchmark(benchmark, layout, raw_dir, names, {s: reader(s) for s in SPLIT_ORDER}, extra_features=dict(_FERPLUS_FEATURES), split_sources=sources, notes=[_FERPLUS_NOTE])


# jin2 names its splits the other way round from Microsoft: its "PublicTest" is the official test set.
_JIN2_USAGE_TO_SPLIT = {"training": "train", "publictest": "test", "privatetest": "validation"}
_JIN2_FOLDERS = {"train": ("train",), "test": ("test",), "validation": ("valid", "val", "validation")}


def _ferplus_jin2(raw_dir: Path, benchmark: str) -> RawBenchmark:
    """VT-NR's hard-label file ``fer2013new_jin2.csv`` (columns Usage, Image Name, 0..7, UNK, NF, emotion)."""
    names = get_label_names("ferplus")
    label_file = _find_file(raw_dir, ["fer2013new_jin2.csv"])
    if label_file is None:
        raise BenchmarkError(f"{raw_dir}: fer2013new_jin2.csv not found")
    _require_columns(label_file, ["Usage", "Image Name", "emotion"])
    shown_file = _relative(label_file, raw_dir)
    folders = {s: _child(label_file.parent, *c) or _child(raw_dir, *c) for s, c in _JIN2_FOLDERS.items()}

    def reader(split: str) -> Callable[[ValidationReport], Iterator[RawExample]]:
        def read(report: ValidationReport) -> Iterator[RawExample]:
            for row in _open_csv(label_file):
                where = f"{shown_file}:{row['__line__']}"
                usage = row.get("usage", "").strip()
                row_split = _JIN2_USAGE_TO_SPLIT.get(usage.lower())
                if row_split is None:
                    if split == "train":
                        report.add_issue("malformed_row", None, where, f"Usage {usage!r} is not Training, PublicTest or PrivateTest")
                    continue
                if row_split != split:
                    continue
                folder = folders[split] or (label_file.parent / _JIN2_FOLDERS[split][0])
                path = folder / row.get("image name", "").strip()
                shown = _relative(path, raw_dir)
                emotion = row.get("emotion", "").strip()
                if not emotion.isdigit() or int(emotion) >= len(names):
                    report.add_issue("label_out_of_range", split, shown, f"{where}: emotion {emotion!r} outside 0..{len(names) - 1}")
                    continue
                soft = [0.0] * len(names)
                soft[int(emotion)] = 1.0
                yield RawExample(shown, int(emotion), _file_reader(path), {"soft_label": soft})

        return read

    return RawBenchmark(
        benchmark, "ferplus-jin2", raw_dir, names, {s: reader(s) for s in SPLIT_ORDER},
        extra_features={"soft_label": _FERPLUS_FEATURES["soft_label"]},
        split_sources={s: f"{shown_file} Usage={u}" for s, u in (("train", "Training"), ("test", "PublicTest (= official FER+ test)"), ("validation", "PrivateTest (= official FER+ validation)"))},
        notes=["fer2013new_jin2.csv hard labels (upstream VT-NR); its PublicTest/PrivateTest names are swapped w.r.t. Microsoft's file, so PublicTest is written as test; soft_label is one-hot"],
    )


# ---------------------------------------------------------------------------------------------
# Layout registry and detection
# ---------------------------------------------------------------------------------------------
#: layout name -> (benchmarks it applies to, reader)
LAYOUTS: dict[str, tuple[tuple[str, ...], Callable[[Path, str], RawBenchmark]]] = {
    "raf-db-list": (("raf-db",), _raf_db_list),
    "affectnet-csv": (("affectnet-7", "affectnet-8"), _affectnet_csv),
    "affectnet-npy": (("affectnet-7", "affectnet-8"), _affectnet_npy),
    "fer2013-csv": (("fer2013",), _fer2013_csv),
    "ferplus-csv": (("ferplus",), lambda raw_dir, benchmark: _ferplus(raw_dir, benchmark, "ferplus-csv")),
    "ferplus-folders": (("ferplus",), lambda raw_dir, benchmark: _ferplus(raw_dir, benchmark, "ferplus-folders")),
    "ferplus-jin2": (("ferplus",), _ferplus_jin2),
    "class-folders": (tuple(BENCHMARKS), _class_folders),
}


def _detect_layout(raw_dir: Path, benchmark: str) -> str:
    if benchmark == "raf-db" and _find_file(raw_dir, ["list_patition_label.txt", "list_partition_label.txt"]):
        return "raf-db-list"
    if benchmark.startswith("affectnet"):
        if _find_file(raw_dir, ["training.csv", "validation.csv"]):
            return "affectnet-csv"
        if _child(raw_dir, "train_set", "val_set"):
            return "affectnet-npy"
    if benchmark == "fer2013" and _fer2013_csv_file(raw_dir):
        return "fer2013-csv"
    if benchmark == "ferplus":
        if _find_file(raw_dir, ["fer2013new.csv"]):
            return "ferplus-csv" if _fer2013_csv_file(raw_dir) else "ferplus-folders"
        if _find_file(raw_dir, ["fer2013new_jin2.csv"]):
            return "ferplus-jin2"
        raise BenchmarkError(f"{raw_dir}: FERPlus needs fer2013new.csv (with fer2013.csv or FER2013Train/... folders) or fer2013new_jin2.csv")
    return "class-folders"


def read_raw_benchmark(benchmark: str, raw_dir: str | os.PathLike, layout: str = "auto") -> RawBenchmark:
    """Resolve ``raw_dir`` into split readers for ``benchmark`` (``layout="auto"`` detects the layout)."""
    benchmark = _benchmark_key(benchmark)
    raw_dir = Path(raw_dir).expanduser()
    if not raw_dir.is_dir():
        raise BenchmarkError(f"raw directory {raw_dir} does not exist or is not a directory")
    if layout == "auto":
        layout = _detect_layout(raw_dir, benchmark)
    if layout not in LAYOUTS:
        raise BenchmarkError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)} or 'auto'")
    benchmarks, build = LAYOUTS[layout]
    if benchmark not in benchmarks:
        raise BenchmarkError(f"layout {layout!r} is for {', '.join(benchmarks)}, not {benchmark}")
    try:
        return build(raw_dir, benchmark)
    except BenchmarkError as error:
        if layout != "class-folders" or benchmark not in _LAYOUT_HINTS:
            raise
        raise BenchmarkError(f"{error}; {benchmark} raw downloads are read from {_LAYOUT_HINTS[benchmark]}") from None


# What auto-detection looks for, for errors on a directory that matches nothing.
_LAYOUT_HINTS = {
    "raf-db": "EmoLabel/list_patition_label.txt + Image/aligned/, or train/ + test|valid/ class folders",
    "affectnet-7": "training.csv/validation.csv + Manually_Annotated_Images/, train_set/ + val_set/, or class folders",
    "affectnet-8": "training.csv/validation.csv + Manually_Annotated_Images/, train_set/ + val_set/, or class folders",
    "fer2013": "fer2013.csv (emotion, pixels, Usage), or train/ + test/ class folders",
}


# ---------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------
def _validated_examples(raw: RawBenchmark, split: str, report: ValidationReport, duplicates: DuplicateTracker, progress: bool) -> Iterator[dict[str, Any]]:
    """Read, decode-check and hash each image of ``split``; yield the rows that are usable."""
    examples = raw.splits[split](report)
    bar = tqdm(examples, total=raw.split_sizes.get(split), desc=f"{raw.benchmark} {split}", unit="img", disable=not progress, leave=True)
    for example in bar:
        try:
            data = example.read_bytes()
        except FileNotFoundError:
            report.add_issue("missing_file", split, example.file_name, "image file not found")
            continue
        except (OSError, ValueError) as error:
            report.add_issue("unreadable_image", split, example.file_name, str(error))
            continue
        try:
            check = inspect_image_bytes(data)
        except ValueError as error:
            report.add_issue("unreadable_image", split, example.file_name, str(error))
            continue
        earlier = duplicates.add(check.digest, split, example.file_name)
        if earlier is not None:
            report.add_issue("duplicate_across_splits", split, example.file_name, f"same pixels as {earlier[1]} in split '{earlier[0]}' (kept in both)")
        report.count(split, example.label)
        # ``path``: the base name, as ``save_to_disk``/``push_to_hub`` would store it anyway.
        yield {"image": {"bytes": data, "path": os.path.basename(example.file_name)}, "label": example.label, **example.extras}


def _yield_from(first: dict[str, Any], rest: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield first
    yield from rest


def _build_splits(
    raw: RawBenchmark,
    report: ValidationReport,
    duplicates: DuplicateTracker,
    features: datasets.Features,
    built: dict[str, datasets.Dataset],
    cache_dir: str | os.PathLike | None,
    progress: bool,
) -> None:
    """Stream each split of ``raw`` into Arrow files (one ``Dataset.from_generator`` per split)."""
    for split in [s for s in SPLIT_ORDER if s in raw.splits]:
        rows = _validated_examples(raw, split, report, duplicates, progress)
        first = next(rows, None)  # from_generator cannot build an empty split
        if first is None:
            report.class_counts.pop(split, None)
            report.notes.append(f"split '{split}' has no usable image and is not written")
            continue
        try:
            built[split] = datasets.Dataset.from_generator(
                _yield_from,
                features=features,
                cache_dir=str(cache_dir) if cache_dir is not None else None,
                gen_kwargs={"first": first, "rest": rows},
                split=datasets.NamedSplit(split),
                # A fresh fingerprint: the raw files may have changed since the last run, and a cache hit
                # would skip validation entirely.
                fingerprint=uuid.uuid4().hex,
                writer_batch_size=_WRITER_BATCH_SIZE,
            )
        except datasets.exceptions.DatasetGenerationError as error:
            # datasets wraps whatever our readers raised; surface the reader's own message (it names the
            # file and line) instead of "An error occurred while generating the dataset".
            cause = error.__cause__ or error.__context__
            if isinstance(cause, BenchmarkError):
                raise cause from None
            if isinstance(cause, Exception):
                raise BenchmarkError(f"{raw.benchmark} split '{split}' ({raw.split_sources.get(split, raw.layout)}): "
                                     f"{type(cause).__name__}: {cause}") from cause
            raise


def build_benchmark(
    benchmark: str,
    raw_dir: str | os.PathLike,
    *,
    layout: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    align: str | None = None,
) -> tuple[datasets.DatasetDict, ValidationReport]:
    """Read a raw benchmark into a ``DatasetDict`` (Arrow files under ``cache_dir``) and its validation report.

    Splits are read one after another (train, validation, test) so that images shared with an
    earlier split are reported on the later one. Splits left without any usable image are not written
    (the report says so and lists why).
    """
    raw = read_raw_benchmark(benchmark, raw_dir, layout)
    aligner = None
    if align is not None:  # --align: faces cropped with the benchmark's landmarks or the detector (data/face_alignment.py)
        from .face_alignment import align_raw_benchmark, resolve_dataset_alignment

        raw, aligner = align_raw_benchmark(raw, resolve_dataset_alignment(align, raw.benchmark))
    report = ValidationReport(raw.benchmark, list(raw.label_names), raw_dir=str(raw.raw_dir.resolve()), layout=raw.layout)
    report.notes.extend(raw.notes)
    report.ignored_files.extend(raw.ignored_files)
    report.split_sources.update(raw.split_sources)
    duplicates = DuplicateTracker()
    features = raw.features
    built: dict[str, datasets.Dataset] = {}
    # Our bars count images as they are validated; datasets' "Generating split" bars would duplicate them.
    datasets_bars_were_on = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        _build_splits(raw, report, duplicates, features, built, cache_dir, progress)
    finally:
        if datasets_bars_were_on:
            datasets.enable_progress_bars()
    report.duplicates_within_split = {s: n for s, n in duplicates.within_split.items() if n}
    report.duplicates_within_split = {s: n for s, n in duplicates.within_split.items() if n}
    report.check_empty_classes([s for s in SPLIT_ORDER if s in built])
    if not built:
        raise BenchmarkError(f"{raw_dir}: no usable image in any split ({report.issue_counts})")
    dataset = datasets.DatasetDict(built)
    description = f"{raw.benchmark} prepared by hf_fer from the {raw.layout} layout; label order: {', '.join(raw.label_names)}"
    if raw.benchmark == "ferplus":
        description += ". " + _FERPLUS_NOTE
    if aligner is not None:
        used = ", ".join(f"{source}: {count}" for source, count in sorted(aligner.sources.items())) or "no image"
        if aligner.fallbacks:  # shipped landmarks expected but not found: say so, or a wrong layout goes unnoticed
            used += " (detector used for " + ", ".join(f"{count} image(s) with {why}" for why, count in sorted(aligner.fallbacks.items())) + ")"
        description += f". Faces aligned by hf_fer (face_alignment {json.dumps(aligner.alignment)}); landmarks from {used}"
        report.notes.append(f"aligned faces; landmarks from {used}")
    for split_dataset in dataset.values():
        split_dataset.info.description = description
    return dataset, report


@dataclass
class PreparedDataset:
    """Result of :func:`prepare_dataset`: the saved dataset (reloaded from ``output``) and its report."""

    dataset: datasets.DatasetDict
    report: ValidationReport
    output: Path
    report_path: Path


def _check_output(output: Path, overwrite: bool) -> bool:
    """Refuse an output we may not replace; ``True`` when it holds something (replaced only once the new one is complete)."""
    if not output.exists() or (output.is_dir() and not any(output.iterdir())):
        return output.exists()
    ours = output.is_dir() and ((output / "dataset_dict.json").exists() or (output / "validation_report.json").exists())
    if not overwrite:
        raise BenchmarkError(f"output {output} already exists and is not empty (pass --overwrite to replace a dataset written before)")
    if not ours:
        raise BenchmarkError(f"output {output} exists and does not look like a prepared dataset; refusing to overwrite it")
    return True


def prepare_dataset(
    benchmark: str,
    raw_dir: str | os.PathLike,
    output: str | os.PathLike,
    *,
    layout: str = "auto",
    strict: bool = False,
    overwrite: bool = False,
    push_to_hub: str | None = None,
    private: bool | None = None,
    progress: bool = True,
    align: str | None = None,
) -> PreparedDataset:
    """Convert a raw benchmark, save it to ``output`` (``save_to_disk``) and write ``output/validation_report.json``.

    The dataset is built in a temporary folder next to ``output`` and renamed into place only when complete,
    so an error, ``--strict`` failing or a kill leaves a dataset written before untouched (a killed run leaves
    a ``.<output>.hf_fer-partial-*`` folder that the next run deletes).

    With ``strict=True`` any validation issue raises :class:`StrictValidationError` after the report is
    written (to ``output/validation_report.json``, or ``output/validation_report.rejected.json`` when
    ``output`` holds a dataset written before, which is kept), and the dataset itself is not saved.
    ``push_to_hub`` also uploads the ``DatasetDict`` to that Hub dataset repo (the report stays local).
    """
    output = Path(output).expanduser()
    recover_interrupted(output)
    replacing = _check_output(output, overwrite)
    output.parent.mkdir(parents=True, exist_ok=True)
    work = staging_folder(output)
    staged = work / "dataset"
    try:
        # Arrow cache and saved copy on the output's disk (the cache is as large as the dataset); both go with ``work``.
        dataset, report = build_benchmark(benchmark, raw_dir, layout=layout, cache_dir=work / "cache", progress=progress, align=align)
        report_path = output / "validation_report.json"
        if strict and report.num_issues:
            if (output / "dataset_dict.json").exists():  # keep the old dataset and the report that goes with it
                report_path = output / "validation_report.rejected.json"
            report.write_json(report_path, strict=True)
            kept = f"; the dataset already in {output} was kept" if replacing and report_path.name != "validation_report.json" else ""
            raise StrictValidationError(
                f"--strict: {report.num_issues} validation issue(s) in {raw_dir} ("
                + ", ".join(f"{k}: {n}" for k, n in report.issue_counts.items() if n)
                + f"); dataset not written{kept}, see {report_path}",
                report,
            )
        dataset.save_to_disk(str(staged))
        report.write_json(staged / "validation_report.json", strict=strict)
        swap_into_place(staged, output)
        if push_to_hub:
            dataset.push_to_hub(push_to_hub, private=private, commit_message=f"Add {report.benchmark} prepared with hf_fer")
        del dataset
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return PreparedDataset(datasets.load_from_disk(str(output)), report, output, report_path)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def build_parser(prog: str = "hf-fer prepare-dataset") -> argparse.ArgumentParser:
    """The parser lives in the torch-free :mod:`hf_fer_cli.parsers`, so ``--help`` and argument errors answer at once."""
    from hf_fer_cli.parsers import prepare_dataset_parser

    return prepare_dataset_parser(prog)


def main(argv: Sequence[str] | None = None) -> int:
    """``prepare-dataset`` entry point (``scripts/prepare_dataset.py`` and ``hf-fer prepare-dataset``).

    Exit codes: 0 written, 1 ``--strict`` found issues (report written, dataset not), 2 error (one line
    on stderr; ``--debug`` shows the traceback).
    """
    args = build_parser().parse_args(argv)
    try:
        if args.no_progress:
            datasets.disable_progress_bars()
        result = prepare_dataset(
            args.benchmark, args.raw_dir, args.output, layout=args.layout, strict=args.strict,
            overwrite=args.overwrite, push_to_hub=args.push_to_hub, private=args.private, progress=not args.no_progress,
            align=args.align,
        )
    except StrictValidationError as error:
        print(error.report.summary())
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # one clear line for users; --debug for the traceback
        if args.debug:
            raise
        print(f"error: {error}" if isinstance(error, (BenchmarkError, OSError)) else f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    finally:
        if args.no_progress:
            datasets.enable_progress_bars()
    print(result.report.summary())
    print(f"saved to {result.output} (validation report: {result.report_path})")
    if args.push_to_hub:
        print(f"pushed to https://huggingface.co/datasets/{args.push_to_hub}")
    return 0


from .loading import load_fer_dataset  # noqa: E402  (re-exported: the loader for training/evaluation)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
