"""Validation of raw benchmark data while it is converted to ``datasets``.

Raw FER downloads are messy: truncated JPEGs, label files pointing at images that were never
extracted, ids outside the label space, classes that end up empty after filtering, and the same face
in train and test. A model trained on such data silently reports wrong numbers, so the converters
collect every problem here instead of skipping rows, and ``prepare_dataset`` prints a summary and
writes it to ``validation_report.json`` (``--strict`` turns any issue into a failure).

Two kinds of entries are kept apart:

* **issues**: something is wrong with the raw data (the kinds in :data:`ISSUE_KINDS`);
* **exclusions**: rows the benchmark itself defines as not part of it (AffectNet's none/uncertain/no-face
  ids, contempt in AffectNet-7, FERPlus images without a majority). They are listed too, but are not
  errors and do not fail ``--strict``.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..image_io import ImageDecodeError, load_image

__all__ = [
    "ISSUE_KINDS",
    "ImageCheck",
    "inspect_image_bytes",
    "DuplicateTracker",
    "ValidationReport",
]

#: Issue kinds, in the order they are shown. Every one of them fails ``--strict``.
ISSUE_KINDS: dict[str, str] = {
    "unreadable_image": "image cannot be decoded (corrupt, truncated, or not an image)",
    "missing_file": "a label file names an image that does not exist",
    "label_out_of_range": "label id or class name outside the benchmark's label space",
    "malformed_row": "label-file row that cannot be parsed (wrong field count, unknown split...)",
    "empty_class": "a class has no image in a split",
    "duplicate_across_splits": "exactly the same image (decoded pixels) appears in two splits",
}

# How many entries of each kind the printed summary shows (the JSON report lists all of them).
_SUMMARY_EXAMPLES = 5


@dataclass(frozen=True)
class ImageCheck:
    """Result of decoding one image: its pixel digest (for duplicate detection) and basic geometry."""

    digest: bytes
    width: int
    height: int
    mode: str


def inspect_image_bytes(data: bytes, name: str | None = None) -> ImageCheck:
    """Fully decode ``data`` with the training decoder and hash its pixels; ``ValueError`` when unreadable.

    The decoder is :func:`hf_fer.image_io.load_image`, exactly what training and evaluation use, so every
    image accepted here also trains (a CMYK JPEG, a 16-bit or palette PNG decode to the same RGB pixels
    everywhere), and everything it refuses (truncated, not an image, too many pixels...) is reported
    here instead of crashing a training run. The digest is taken over the decoded RGB pixels and size,
    so the same face stored twice with different metadata, formats or file names is still caught.
    ``mode`` is the decoded mode (always RGB).
    """
    try:
        image = load_image(data, name=name)
    except ImageDecodeError as error:
        raise ValueError(error.reason) from None
    hasher = hashlib.blake2b(digest_size=16)
    hasher.update(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    hasher.update(image.tobytes())
    return ImageCheck(hasher.digest(), image.size[0], image.size[1], image.mode)


class DuplicateTracker:
    """Finds images shared between splits from their pixel digests, in one streaming pass.

    Only a 16-byte digest and the first file name are kept per distinct image (about 150 bytes each,
    ~45 MB for AffectNet's 290k images), so memory does not depend on image size.
    """

    def __init__(self):
        self._first_seen: dict[bytes, tuple[str, str]] = {}
        self.within_split: Counter[str] = Counter()

    def add(self, digest: bytes, split: str, file_name: str) -> tuple[str, str] | None:
        """Record an image; return ``(split, file)`` of an earlier identical image in another split."""
        earlier = self._first_seen.get(digest)
        if earlier is None:
            self._first_seen[digest] = (split, file_name)
            return None
        if earlier[0] == split:
            self.within_split[split] += 1
            return None
        return earlier


@dataclass
class ValidationReport:
    """Everything found while reading a raw benchmark: counts, issues and exclusions.

    ``issues[kind]`` and ``excluded[reason]`` are lists of ``{"split", "file", "detail"}`` dicts.
    """

    benchmark: str
    label_names: list[str]
    raw_dir: str = ""
    layout: str = ""
    issues: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    excluded: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    ignored_files: list[str] = field(default_factory=list)
    class_counts: dict[str, Counter] = field(default_factory=dict)
    split_sources: dict[str, str] = field(default_factory=dict)
    duplicates_within_split: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    # -- collecting ---------------------------------------------------------------------------
    def add_issue(self, kind: str, split: str | None, file: str | os.PathLike | None, detail: str) -> None:
        if kind not in ISSUE_KINDS:
            raise ValueError(f"unknown issue kind {kind!r}; expected one of {list(ISSUE_KINDS)}")
        self.issues[kind].append({"split": split, "file": None if file is None else str(file), "detail": detail})

    def exclude(self, reason: str, split: str | None, file: str | os.PathLike | None, detail: str = "") -> None:
        self.excluded[reason].append({"split": split, "file": None if file is None else str(file), "detail": detail})

    def count(self, split: str, label: int) -> None:
        self.class_counts.setdefault(split, Counter())[label] += 1

    def check_empty_classes(self, splits: Sequence[str]) -> None:
        """Report every class without an image in each split (called once all splits are read)."""
        for split in splits:
            counts = self.class_counts.setdefault(split, Counter())
            for index, name in enumerate(self.label_names):
                if counts[index] == 0:
                    self.add_issue("empty_class", split, None, f"class {index} ({name}) has no image in split '{split}'")

    # -- reading ------------------------------------------------------------------------------
    @property
    def issue_counts(self) -> dict[str, int]:
        return {kind: len(self.issues.get(kind, [])) for kind in ISSUE_KINDS}

    @property
    def num_issues(self) -> int:
        return sum(self.issue_counts.values())

    @property
    def excluded_counts(self) -> dict[str, int]:
        return {reason: len(rows) for reason, rows in self.excluded.items()}

    def split_names(self) -> list[str]:
        order = {"train": 0, "validation": 1, "test": 2}
        return sorted(self.class_counts, key=lambda s: (order.get(s, 3), s))

    def counts_by_name(self) -> dict[str, dict[str, int]]:
        return {
            split: {name: int(self.class_counts[split][i]) for i, name in enumerate(self.label_names)}
            for split in self.split_names()
        }

    def to_dict(self, *, strict: bool = False) -> dict[str, Any]:
        counts = self.counts_by_name()
        return {
            "benchmark": self.benchmark,
            "raw_dir": self.raw_dir,
            "layout": self.layout,
            "label_names": list(self.label_names),
            "splits": {
                split: {
                    "num_examples": sum(per_class.values()),
                    "class_counts": per_class,
                    "source": self.split_sources.get(split, ""),
                }
                for split, per_class in counts.items()
            },
            "num_issues": self.num_issues,
            "issue_counts": self.issue_counts,
            "issues": {kind: list(self.issues.get(kind, [])) for kind in ISSUE_KINDS},
            "excluded_counts": self.excluded_counts,
            "excluded": {reason: list(rows) for reason, rows in self.excluded.items()},
            "ignored_files": list(self.ignored_files),
            "duplicates_within_split": dict(self.duplicates_within_split),
            "notes": list(self.notes),
            "strict": strict,
            # True when no issue was found; with ``strict`` a False here also means nothing was written.
            "passed": self.num_issues == 0,
        }

    def write_json(self, path: str | os.PathLike, *, strict: bool = False) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(strict=strict), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    def count_table(self) -> str:
        """Per-split, per-class count table (classes as rows, splits as columns)."""
        splits = self.split_names()
        counts = self.counts_by_name()
        name_width = max([len("class"), len("total")] + [len(f"{i} {n}") for i, n in enumerate(self.label_names)])
        widths = [max(len(s), 7) for s in splits]
        lines = ["  ".join(["class".ljust(name_width)] + [s.rjust(w) for s, w in zip(splits, widths)])]
        lines.append("-" * len(lines[0]))
        for index, name in enumerate(self.label_names):
            row = [f"{index} {name}".ljust(name_width)] + [str(counts[s][name]).rjust(w) for s, w in zip(splits, widths)]
            lines.append("  ".join(row))
        lines.append("-" * len(lines[0]))
        lines.append("  ".join(["total".ljust(name_width)] + [str(sum(counts[s].values())).rjust(w) for s, w in zip(splits, widths)]))
        return "\n".join(lines)

    def summary(self) -> str:
        """Human-readable summary: count table, issues with a few file names each, exclusions, notes."""
        lines = [f"{self.benchmark} ({self.layout}) from {self.raw_dir}", self.count_table()]
        for split in self.split_names():
            if split in self.split_sources:
                lines.append(f"split {split} <- {self.split_sources[split]}")
        if self.num_issues:
            lines.append(f"{self.num_issues} issue(s):")
            for kind, description in ISSUE_KINDS.items():
                rows = self.issues.get(kind, [])
                if not rows:
                    continue
                lines.append(f"  {kind}: {len(rows)} ({description})")
                for row in rows[:_SUMMARY_EXAMPLES]:
                    where = row["file"] or row["split"] or ""
                    lines.append(f"    - {where}: {row['detail']}" if where else f"    - {row['detail']}")
                if len(rows) > _SUMMARY_EXAMPLES:
                    lines.append(f"    ... {len(rows) - _SUMMARY_EXAMPLES} more in validation_report.json")
        else:
            lines.append("no issues found")
        for reason, rows in self.excluded.items():
            lines.append(f"excluded by the benchmark's definition - {reason}: {len(rows)}")
        if self.ignored_files:
            lines.append(f"ignored {len(self.ignored_files)} non-image file(s), e.g. {self.ignored_files[0]}")
        for split, count in self.duplicates_within_split.items():
            if count:
                lines.append(f"note: {count} image(s) in split '{split}' duplicate another image of the same split (kept)")
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)
