"""Regression tests for prepare-dataset / evaluate defects found by an audit.

- a failed, ``--strict``-rejected or killed ``prepare-dataset --overwrite`` must keep the dataset written before;
- non-UTF-8 bytes in label files are reported with file, line and byte offset (not "DatasetGenerationError");
- RAF-DB landmark files: bad numbers name the file and line; the real download's ``*_manu_attri.txt`` is read;
- ``evaluate`` skips a ``None`` image with its row index instead of stopping.
"""
from __future__ import annotations

import codecs
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
from test_benchmarks import run_cli, write  # the same helpers as the benchmark-reader tests

_rng = np.random.default_rng(7)


def image_bytes(size: int = 12) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()



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


# ---------------------------------------------------------------------------------------------
# 3./4. RAF-DB manual landmark files: the download's *_manu_attri.txt, errors naming file and line
# ---------------------------------------------------------------------------------------------
# Hand-written, in the download's format: 5 lines "x y" (eyes, nose tip, mouth corners), then gender, race, age.
MANU_ATTRI = "41.25\t52.50\n78.00\t50.75\n60.00\t70.00\n45.50\t90.25\n75.00\t91.00\n1\n2\n2\n"
POINTS = [[41.25, 52.5], [78.0, 50.75], [60.0, 70.0], [45.5, 90.25], [75.0, 91.0]]


def test_read_manu_attri_by_hand(tmp_path):
    from hf_fer.data.face_alignment import read_raf_db_manual_landmarks

    assert read_raf_db_manual_landmarks(write(tmp_path / "a_manu_attri.txt", MANU_ATTRI)).tolist() == POINTS
    # pairs in the subject's order (mirror) are put in ArcFace order; trailing blank lines are fine
    mirrored = "78 50.75\n41.25 52.5\n60 70\n75 91\n45.5 90.25\n\n"
    assert read_raf_db_manual_landmarks(write(tmp_path / "b_manual.txt", mirrored)).tolist() == POINTS
    bad = {
        "c.txt": ("41.25 52.5\n78 50.75\nabc 70\n45.5 90.25\n75 91\n", r"c\.txt:3: landmark 'abc 70' is not two numbers"),
        "d.txt": ("41.25 52.5\n78 50.75\n60 70\n", r"d\.txt: expected 5 landmark lines .* got 3 line"),
        "e.txt": ("41.25 52.5\n78 50.75\n60 70\n45.5 90.25\n75 91\n10 20\n", r"e\.txt:6: expected one attribute value"),
        "f.txt": ("41.25 52.5\n78\n60 70\n45.5 90.25\n75 91\n", r"f\.txt:2: expected a landmark line 'x y', got '78'"),
    }
    for name, (text, message) in bad.items():
        with pytest.raises(ValueError, match=message):
            read_raf_db_manual_landmarks(write(tmp_path / name, text))


def _smooth_image(path: Path, shift: int) -> np.ndarray:
    """A smooth 140x140 RGB image (bilinear warps of it differ by little between libraries)."""
    y, x = np.mgrid[0:140, 0:140].astype(np.float64)
    pixels = np.stack([x * 1.5 + shift, y * 1.5, (x + y) * 0.8 + 2 * shift], axis=-1).clip(0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels.astype(np.float64)


def test_align_reads_manu_attri_files_and_reports_fallbacks(tmp_path, capsys):
    from skimage import transform

    from hf_fer.faces.alignment import RAFDB_ALIGNMENT

    basic = tmp_path / "raw" / "basic"
    (basic / "Image" / "original").mkdir(parents=True)
    manual = basic / "Annotation" / "manual"
    originals = {}
    landmark_files = {
        "train_00001": ("_manu_attri.txt", MANU_ATTRI),
        "train_00002": ("_manual.txt", "".join(f"{x} {y}\n" for x, y in POINTS)),  # hf_fer's earlier name still works
        "train_00003": ("_manu_attri.txt", MANU_ATTRI.replace("60.00\t70.00", "abc\t70.00")),
        "test_00001": ("_manu_attri.txt", MANU_ATTRI),
        "test_00002": None,  # no landmark file: the detector stands in, and the report says why
    }
    for index, (stem, landmark) in enumerate(landmark_files.items()):
        originals[stem] = _smooth_image(basic / "Image" / "original" / f"{stem}.png", 10 * index)
        if landmark is not None:
            write(manual / f"{stem}{landmark[0]}", landmark[1])
    write(basic / "EmoLabel" / "list_patition_label.txt", "".join(f"{stem}.png {k % 7 + 1}\n" for k, stem in enumerate(landmark_files)))
    out = tmp_path / "out"
    assert run_cli(tmp_path / "raw", out, "raf-db", "--align") == 0
    printed = capsys.readouterr().out
    assert "landmarks shipped with the benchmark: 3" in printed
    assert "detector used for 1 image(s) with no landmark file Annotation/manual/<image>{_manu_attri.txt" in printed

    report = json.loads((out / "validation_report.json").read_text())
    details = [row["detail"] for row in report["issues"]["unreadable_image"]]
    assert any("train_00003_manu_attri.txt:3: landmark 'abc 70.00' is not two numbers" in d for d in details), details
    dataset = datasets.load_from_disk(str(out))
    assert dataset["train"].num_rows == 2
    template = np.array(RAFDB_ALIGNMENT["template"])
    tform = transform.SimilarityTransform.from_estimate(np.array(POINTS), template)
    for row, stem in zip(dataset["train"], ["train_00001", "train_00002"]):
        expected = transform.warp(originals[stem], tform.inverse, output_shape=(100, 100), order=1, preserve_range=True)
        assert np.abs(np.asarray(row["image"].convert("RGB"), dtype=np.float64) - expected).mean() < 2.0


def test_align_affectnet_csv_with_a_bom_uses_its_landmarks_and_reports_fallbacks(tmp_path, capsys):
    """A CSV saved with a BOM (Excel) hid the facial_landmarks columns: every image silently went to the detector."""
    points = np.full((68, 2), [60.0, 70.0])
    points[36:42], points[42:48], points[30], points[48], points[54] = POINTS
    landmarks = ";".join(f"{v:.2f}" for v in points.reshape(-1))
    rows = []
    for index, (name, marks) in enumerate([("1/a.png", landmarks), ("1/b.png", landmarks), ("2/c.png", "")]):
        (tmp_path / "raw" / "Manually_Annotated_Images" / name).parent.mkdir(parents=True, exist_ok=True)
        _smooth_image(tmp_path / "raw" / "Manually_Annotated_Images" / name, 10 * index)
        rows.append(f'{name},"{marks}",{index + 1}\n')
    write(tmp_path / "raw" / "training.csv", codecs.BOM_UTF8 + ("subDirectory_filePath,facial_landmarks,expression\n" + "".join(rows)).encode())
    assert run_cli(tmp_path / "raw", tmp_path / "out", "affectnet-8", "--align") == 0
    printed = capsys.readouterr().out
    assert "landmarks shipped with the benchmark: 2" in printed
    assert "detector used for 1 image(s) with no usable facial_landmarks" in printed


# ---------------------------------------------------------------------------------------------
# 5. evaluate skips a None image (and reports its row) like undecodable bytes
# ---------------------------------------------------------------------------------------------
def test_evaluate_skips_a_none_image_with_its_row(tmp_path, capsys):
    import test_evaluation_fixtures as fx
    from hf_fer.cli import main as cli_main
    from hf_fer.data.synthetic import make_synthetic_fer
    from hf_fer.labels import get_label_names

    names = get_label_names("fer2013")
    clean = make_synthetic_fer(8, image_size=32, seed=3, label_space="fer2013")
    images = list(clean.cast_column("image", datasets.Image(decode=False))["image"])
    images[2] = None
    images[5] = {"bytes": b"not an image", "path": "broken.png"}
    dataset = datasets.Dataset.from_dict({"image": images, "label": clean["label"]}, features=clean.features)
    datasets.DatasetDict({"test": dataset}).save_to_disk(str(tmp_path / "data"))
    with fx.toy_architecture():
        model_dir = fx.save_toy_model(tmp_path / "model", id2label=dict(enumerate(names)))
        assert cli_main(["evaluate", "--model", str(model_dir), "--dataset", str(tmp_path / "data"), "--batch-size", "4",
                         "--output-dir", str(tmp_path / "eval"), "--no-progress"]) == 0
    results = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    assert [s["index"] for s in results["skipped_images"]] == [2, 5]
    assert "no image" in results["skipped_images"][0]["error"] and "empty" in results["skipped_images"][0]["error"]
    assert results["num_samples"] == 6
    assert "row 2" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# 6. hf-fer convert stages its output and moves it in when complete
# ---------------------------------------------------------------------------------------------
HDF5 = Path(__file__).parent / "fixtures" / "mini_xception" / "emotion_model.hdf5"


def test_convert_never_leaves_a_half_written_folder(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from hf_fer import conversion

    out = tmp_path / "converted"
    conversion.convert_original_checkpoint("mini_xception", HDF5, out, dataset="raf-db", verbose=False)
    weights = load_file(out / "model.safetensors")
    config = (out / "config.json").read_text()
    write(out / "README.md", "my notes")
    write(out / "model-00001-of-00002.safetensors", b"stale shard of an earlier save")
    pid = _dead_pid()
    killed = write(tmp_path / f".converted.hf_fer-partial-{pid}-0000abcd" / "model.safetensors", b"half").parent

    real = conversion.save_with_remote_code

    def crash_after_the_weights(model, processor, folder):
        real(model, None, folder)  # weights, config and code written, the image processor not yet
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(conversion, "save_with_remote_code", crash_after_the_weights)
    with pytest.raises(OSError, match="No space left"):
        conversion.convert_original_checkpoint("mini_xception", HDF5, out, dataset="fer2013", verbose=False)
    with pytest.raises(OSError):  # a new folder: nothing at all appears
        conversion.convert_original_checkpoint("mini_xception", HDF5, tmp_path / "new", verbose=False)
    assert not (tmp_path / "new").exists()
    assert (out / "config.json").read_text() == config and (out / "preprocessor_config.json").is_file()
    assert not killed.exists() and leftovers(tmp_path) == []

    monkeypatch.setattr(conversion, "save_with_remote_code", real)
    conversion.convert_original_checkpoint("mini_xception", HDF5, out, dataset="fer2013", verbose=False)
    assert json.loads((out / "config.json").read_text())["hf_fer_dataset"] == "fer2013"
    assert (out / "README.md").read_text() == "my notes"  # other files of the folder are kept
    assert not (out / "model-00001-of-00002.safetensors").exists()  # weights of the earlier save are not
    assert load_file(out / "model.safetensors").keys() == weights.keys()
    assert leftovers(tmp_path) == []
    # Results of the earlier weights are named as stale (hf-fer push refuses them): said, never silently kept.
    write(out / "eval_results.json", "{}")
    write(out / "pytorch_model.bin", b"old pickle")
    with pytest.warns(UserWarning, match=r"still holds eval_results.json, pytorch_model.bin from before this conversion"):
        conversion.convert_original_checkpoint("mini_xception", HDF5, out, dataset="fer2013", verbose=False)
