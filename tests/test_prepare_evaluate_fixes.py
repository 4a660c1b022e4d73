"""Regression tests for prepare-dataset / evaluate defects found by an audit.

- a failed, ``--strict``-rejected or killed ``prepare-dataset --overwrite`` must keep the dataset written before;
- non-UTF-8 bytes in label files are reported with file, line and byte offset (not "DatasetGenerationError");
- RAF-DB landmark files: bad numbers name the file and line; the real download's ``*_manu_attri.txt`` is read;
- ``evaluate`` skips a ``None`` image with its row index instead of stopping.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from hf_fer.data import benchmarks
from hf_fer.data.benchmarks import main

_rng = np.random.default_rng(7)


def image_bytes(size: int = 12) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)
    return path


def run_cli(raw: Path, out: Path, benchmark: str, *extra: str) -> int:
    return main(["--benchmark", benchmark, "--raw-dir", str(raw), "--output", str(out), "--no-progress", *extra])


def make_raf(root: Path, *, broken: bool = False) -> None:
    """A tiny RAF-DB basic layout (one image per class and split); ``broken`` adds a missing image."""
    lines = []
    for split in ("train", "test"):
        for label in range(1, 8):
            write(root / "Image" / "aligned" / f"{split}_{label:05d}_aligned.png", image_bytes())
            lines.append(f"{split}_{label:05d}.png {label}")
    if broken:
        lines.append("test_09999.png 1")
    write(root / "EmoLabel" / "list_patition_label.txt", "\n".join(lines) + "\n")


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".hf_fer-" in p.name or p.name.startswith(".hf_fer_build_"))


# ---------------------------------------------------------------------------------------------
# 1. --overwrite never loses the dataset written before
# ---------------------------------------------------------------------------------------------
@pytest.fixture()
def existing(tmp_path) -> tuple[Path, bytes]:
    make_raf(tmp_path / "raw")
    out = tmp_path / "out"
    assert run_cli(tmp_path / "raw", out, "raf-db") == 0
    return out, (out / "dataset_dict.json").read_bytes()


def test_overwrite_with_a_wrong_raw_dir_keeps_the_old_dataset(tmp_path, existing, capsys):
    out, marker = existing
    assert run_cli(tmp_path / "raw_typo", out, "raf-db", "--overwrite") == 2
    assert "does not exist" in capsys.readouterr().err
    assert (out / "dataset_dict.json").read_bytes() == marker
    assert datasets.load_from_disk(str(out))["train"].num_rows == 7
    assert leftovers(tmp_path) == []


def test_overwrite_rejected_by_strict_keeps_the_old_dataset_and_its_report(tmp_path, existing, capsys):
    out, marker = existing
    old_report = (out / "validation_report.json").read_text()
    make_raf(tmp_path / "raw_bad", broken=True)
    assert run_cli(tmp_path / "raw_bad", out, "raf-db", "--overwrite", "--strict") == 1
    err = capsys.readouterr().err
    assert "dataset not written" in err and "was kept" in err and "validation_report.rejected.json" in err
    assert (out / "dataset_dict.json").read_bytes() == marker
    assert (out / "validation_report.json").read_text() == old_report
    rejected = json.loads((out / "validation_report.rejected.json").read_text())
    assert rejected["passed"] is False and rejected["issue_counts"]["missing_file"] == 1
    assert datasets.load_from_disk(str(out))["test"].num_rows == 7
    assert leftovers(tmp_path) == []


def test_failure_while_saving_keeps_the_old_dataset(tmp_path, existing, monkeypatch):
    out, marker = existing
    make_raf(tmp_path / "raw2")

    def disk_full(self, path, **kwargs):
        Path(path).mkdir(parents=True)
        (Path(path) / "dataset_dict.json").write_text("{half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(datasets.DatasetDict, "save_to_disk", disk_full)
    with pytest.raises(OSError, match="No space left"):
        benchmarks.prepare_dataset("raf-db", tmp_path / "raw2", out, overwrite=True, progress=False)
    assert (out / "dataset_dict.json").read_bytes() == marker
    assert leftovers(tmp_path) == []


def test_overwrite_replaces_the_dataset_when_complete(tmp_path, existing):
    out, _ = existing
    make_raf(tmp_path / "raw2")
    write(tmp_path / "raw2" / "Image" / "aligned" / "train_00008_aligned.png", image_bytes())
    lines = (tmp_path / "raw2" / "EmoLabel" / "list_patition_label.txt").read_text() + "train_00008.png 3\n"
    write(tmp_path / "raw2" / "EmoLabel" / "list_patition_label.txt", lines)
    assert run_cli(tmp_path / "raw2", out, "raf-db", "--overwrite") == 0
    assert datasets.load_from_disk(str(out))["train"].num_rows == 8
    assert leftovers(tmp_path) == []


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_next_run_cleans_up_after_a_killed_run(tmp_path, existing):
    """A kill leaves ``.out.hf_fer-partial-<pid>-*`` (deleted next time) or, between the two renames of the
    swap, the old dataset in ``.out.hf_fer-old-<pid>-*`` with no ``out`` (put back next time)."""
    out, marker = existing
    pid = _dead_pid()
    partial = write(tmp_path / f".out.hf_fer-partial-{pid}-0000abcd" / "cache" / "x.arrow", b"half").parent.parent
    out.rename(tmp_path / f".out.hf_fer-old-{pid}-0000beef")
    alive = write(tmp_path / f".out.hf_fer-partial-{benchmarks.os.getpid()}-0000cafe" / "x", b"in progress").parent
    unrelated = write(tmp_path / ".out.something-else" / "keep", b"x").parent
    # Without --overwrite the restored dataset is refused, as it would have been before the kill.
    assert run_cli(tmp_path / "raw", out, "raf-db") == 2
    assert (out / "dataset_dict.json").read_bytes() == marker
    assert not partial.exists() and alive.exists() and unrelated.exists()
    assert leftovers(tmp_path) == [alive.name]


# ---------------------------------------------------------------------------------------------
# 2. Non-UTF-8 label files name the file, line and byte offset
# ---------------------------------------------------------------------------------------------
def _fer_row(label: int, usage: str) -> str:
    return f"{label}," + " ".join(str(v) for v in _rng.integers(0, 256, 48 * 48)) + f",{usage}\n"


def test_fer2013_csv_with_a_non_utf8_byte(tmp_path, capsys):
    header = "emotion,pixels,Usage\n"
    rows = [_fer_row(k % 7, "Training") for k in range(3)] + [_fer_row(1, "PublicTest"), _fer_row(2, "PrivateTest")]
    data = (header + "".join(rows)).encode()
    bad_offset = len((header + rows[0] + rows[1]).encode()) + len(rows[2]) - len("Training\n") + 1
    data = data[:bad_offset] + b"\xff" + data[bad_offset + 1:]  # "Training" -> "T\xffaining" on line 4
    write(tmp_path / "raw" / "fer2013.csv", data)
    assert run_cli(tmp_path / "raw", tmp_path / "out", "fer2013") == 2
    err = capsys.readouterr().err.strip()
    assert "DatasetGenerationError" not in err and "\n" not in err
    assert "fer2013.csv:4: not UTF-8" in err and "0xff" in err and f"byte offset {bad_offset}" in err


def test_affectnet_and_ferplus_csv_and_raf_list_with_a_non_utf8_byte(tmp_path, capsys):
    write(tmp_path / "aff" / "training.csv", b"subDirectory_filePath,expression\n1/a.jpg,1\n1/b\xe9.jpg,2\n")
    assert run_cli(tmp_path / "aff", tmp_path / "out", "affectnet-8") == 2
    assert "training.csv:3: not UTF-8 text: byte 0xe9 at byte offset 46" in capsys.readouterr().err

    columns = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
    write(tmp_path / "fp" / "fer2013new.csv", columns.encode() + b"Training,fer0000000.png,\x8010,0,0,0,0,0,0,0,0,0\n")
    write(tmp_path / "fp" / "FER2013Train" / "fer0000000.png", image_bytes())
    assert run_cli(tmp_path / "fp", tmp_path / "out", "ferplus") == 2
    assert "fer2013new.csv:2: not UTF-8" in capsys.readouterr().err

    make_raf(tmp_path / "raf")
    label_file = tmp_path / "raf" / "EmoLabel" / "list_patition_label.txt"
    label_file.write_bytes(b"\xef\xbb\xbf" + label_file.read_bytes() + b"train_\xc3(.png 1\n")  # BOM is fine, \xc3( is not
    assert run_cli(tmp_path / "raf", tmp_path / "out", "raf-db") == 2
    err = capsys.readouterr().err
    assert "list_patition_label.txt:15: not UTF-8 text: byte 0xc3" in err and "DatasetGenerationError" not in err


def test_other_reader_errors_are_unwrapped(tmp_path, monkeypatch, capsys):
    """Whatever else a reader raises inside datasets' generator is shown with its split, not as DatasetGenerationError."""
    make_raf(tmp_path / "raw")

    def exploding_reader(raw_dir, benchmark):
        raw = benchmarks._raf_db_list(raw_dir, benchmark)
        train = raw.splits["train"]

        def read(report):
            yield from train(report)
            raise RuntimeError("label server went away")

        raw.splits = {"train": read}
        return raw

    monkeypatch.setitem(benchmarks.LAYOUTS, "raf-db-list", (("raf-db",), exploding_reader))
    assert run_cli(tmp_path / "raw", tmp_path / "out", "raf-db") == 2
    err = capsys.readouterr().err
    assert "raf-db split 'train'" in err and "RuntimeError: label server went away" in err
