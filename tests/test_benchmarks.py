"""Benchmark readers: tiny raw layouts of every benchmark are generated on the fly, converted with the
``prepare-dataset`` CLI (in-process), reloaded, and checked against counts, names, soft labels and the
validation report computed independently here."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from hf_fer.data import benchmarks
from hf_fer.data.benchmarks import ferplus_majority_label, ferplus_soft_label, main
from hf_fer.labels import get_label_names

RAF = ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]
AFFECTNET_8 = ["neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt"]
FER2013 = ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]
FERPLUS = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]
ALPHABETICAL = ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]

_rng = np.random.default_rng(1234)


def image_bytes(fmt: str = "JPEG", size: int = 12, mode: str = "RGB") -> bytes:
    """A random (hence unique) small image."""
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    buffer = io.BytesIO()
    Image.fromarray(_rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(buffer, format=fmt)
    return buffer.getvalue()


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)
    return path


def run_cli(raw: Path, out: Path, benchmark: str, *extra: str) -> int:
    return main(["--benchmark", benchmark, "--raw-dir", str(raw), "--output", str(out), "--no-progress", *extra])


def report_of(out: Path) -> dict:
    return json.loads((out / "validation_report.json").read_text())


def files_of(report: dict, kind: str) -> list[str]:
    return sorted(Path(row["file"]).name for row in report["issues"][kind] if row["file"])


def counts(dataset: datasets.Dataset) -> list[int]:
    return np.bincount(dataset["label"], minlength=dataset.features["label"].num_classes).tolist()


# ---------------------------------------------------------------------------------------------
# RAF-DB
# ---------------------------------------------------------------------------------------------
def make_raf_list(root: Path, per_class: int = 2) -> dict:
    """RAF-DB basic layout with one of each fault; returns what a correct reader must find."""
    lines, expected = [], {"train": [0] * 7, "test": [0] * 7}
    train_image = None
    for split in ("train", "test"):
        for label in range(1, 8):
            for k in range(per_class):
                name = f"{split}_{label}{k:03d}.jpg"
                data = image_bytes()
                train_image = train_image or data
                write(root / "Image" / "aligned" / name.replace(".jpg", "_aligned.jpg"), data)
                lines.append(f"{name} {label}")
                expected[split][label - 1] += 1
    # faults: corrupt, truncated, missing, out of range, train/test duplicate (kept, reported)
    write(root / "Image" / "aligned" / "train_9001_aligned.jpg", b"this is not a jpeg")
    write(root / "Image" / "aligned" / "test_9002_aligned.jpg", image_bytes()[:200])
    write(root / "Image" / "aligned" / "test_9004_aligned.jpg", image_bytes())
    write(root / "Image" / "aligned" / "test_9005_aligned.jpg", train_image)
    lines += ["train_9001.jpg 1", "test_9002.jpg 2", "test_9003.jpg 3", "test_9004.jpg 8", "test_9005.jpg 4"]
    expected["test"][3] += 1
    write(root / "EmoLabel" / "list_patition_label.txt", "\n".join(lines) + "\n")
    expected.update(
        unreadable=["test_9002_aligned.jpg", "train_9001_aligned.jpg"], missing=["test_9003_aligned.jpg"],
        out_of_range=["test_9004_aligned.jpg"], duplicate=["test_9005_aligned.jpg"], train_image=train_image,
    )
    return expected


def test_raf_db_list_layout_with_faults(tmp_path):
    expected = make_raf_list(tmp_path / "raw")
    out = tmp_path / "out"
    assert run_cli(tmp_path / "raw", out, "raf-db") == 0
    dataset = datasets.load_from_disk(str(out))
    assert sorted(dataset) == ["test", "train"]
    assert dataset["train"].features["label"].names == RAF == get_label_names("raf-db")
    assert isinstance(dataset["train"].features["image"], datasets.Image)
    assert counts(dataset["train"]) == expected["train"]
    assert counts(dataset["test"]) == expected["test"]
    # file order is kept (ARM's batch-coupled evaluation depends on it) and paths name the source file
    assert dataset["train"][0]["image"].size == (12, 12)
    assert dataset.with_format(None)["train"].select_columns("image")[0]["image"] is not None
    first_path = dataset["train"].cast_column("image", datasets.Image(decode=False))[0]["image"]["path"]
    assert first_path == "train_1000_aligned.jpg"

    report = report_of(out)
    assert report["benchmark"] == "raf-db" and report["layout"] == "raf-db-list"
    assert report["label_names"] == RAF
    assert files_of(report, "unreadable_image") == expected["unreadable"]
    assert files_of(report, "missing_file") == expected["missing"]
    assert files_of(report, "label_out_of_range") == expected["out_of_range"]
    assert files_of(report, "duplicate_across_splits") == expected["duplicate"]
    assert "train_1000_aligned.jpg" in report["issues"]["duplicate_across_splits"][0]["detail"]
    assert report["issue_counts"] == {
        "unreadable_image": 2, "missing_file": 1, "label_out_of_range": 1, "malformed_row": 0, "empty_class": 0, "duplicate_across_splits": 1,
    }
    assert report["splits"]["test"]["class_counts"] == dict(zip(RAF, expected["test"]))
    assert report["splits"]["train"]["num_examples"] == sum(expected["train"])
    assert report["passed"] is False and report["strict"] is False


def test_strict_fails_and_writes_only_the_report(tmp_path, capsys):
    make_raf_list(tmp_path / "raw")
    out = tmp_path / "out"
    assert run_cli(tmp_path / "raw", out, "raf-db", "--strict") == 1
    assert not (out / "dataset_dict.json").exists()
    report = report_of(out)
    assert report["strict"] is True and report["passed"] is False and report["num_issues"] == 5
    captured = capsys.readouterr()
    assert "--strict: 5 validation issue(s)" in captured.err and "Traceback" not in captured.err
    assert "unreadable_image: 2" in captured.out and "train_9001_aligned.jpg" in captured.out


def test_clean_layout_passes_strict_and_output_needs_overwrite(tmp_path, capsys):
    root = tmp_path / "raw"
    lines = []
    for split in ("train", "test"):
        for label in range(1, 8):
            write(root / "Image" / "aligned" / f"{split}_{label}_aligned.jpg", image_bytes())
            lines.append(f"{split}_{label}.jpg {label}")
    write(root / "EmoLabel" / "list_patition_label.txt", "\n".join(lines))
    out = tmp_path / "out"
    assert run_cli(root, out, "raf-db", "--strict") == 0
    assert report_of(out)["num_issues"] == 0 and report_of(out)["passed"] is True
    assert run_cli(root, out, "raf-db") == 2  # refuses to overwrite silently
    assert "--overwrite" in capsys.readouterr().err
    assert run_cli(root, out, "raf-db", "--overwrite") == 0


@pytest.mark.parametrize("newline", ["\r", "\r\n"], ids=["bare-cr", "crlf"])
def test_label_list_with_other_line_endings(tmp_path, newline):
    """A label list saved with classic Mac (bare CR) or Windows (CRLF) line endings reads like the Unix one: every
    row is found, none is reported malformed."""
    root = tmp_path / "raw"
    lines = []
    for split in ("train", "test"):
        for label in range(1, 8):
            write(root / "Image" / "aligned" / f"{split}_{label}_aligned.jpg", image_bytes())
            lines.append(f"{split}_{label}.jpg {label}")
    write(root / "EmoLabel" / "list_patition_label.txt", (newline.join(lines) + newline).encode())
    out = tmp_path / "out"
    assert run_cli(root, out, "raf-db", "--strict") == 0, report_of(out)["issues"]
    dataset = datasets.load_from_disk(str(out))
    assert counts(dataset["train"]) == counts(dataset["test"]) == [1] * 7


def test_raf_db_poster_class_folders(tmp_path):
    """POSTER V2's layout: train/ and valid/ with folders 1..7 (RAF-DB's 1-based ids); valid/ is the test set."""
    root = tmp_path / "raw"
    expected = {"train": [0] * 7, "test": [0] * 7}
    for split_dir, split in (("train", "train"), ("valid", "test")):
        for label in range(1, 8):
            for k in range(label % 3 + 1):  # unequal counts, so a wrong offset would be visible
                write(root / split_dir / str(label) / f"{k}.png", image_bytes("PNG"))
                expected[split][label - 1] += 1
    write(root / "train" / "3" / ".DS_Store", b"junk")
    write(root / "train" / "3" / "notes.txt", "junk")
    out = tmp_path / "out"
    assert run_cli(root, out, "raf-db") == 0
    dataset = datasets.load_from_disk(str(out))
    assert sorted(dataset) == ["test", "train"]
    assert counts(dataset["train"]) == expected["train"] and counts(dataset["test"]) == expected["test"]
    report = report_of(out)
    assert report["layout"] == "class-folders"
    assert any("notes.txt" in f for f in report["ignored_files"])
    assert any("valid/" in note and "test split" in note for note in report["notes"])
    assert any("1-based" in note for note in report["notes"])


# ---------------------------------------------------------------------------------------------
# AffectNet
# ---------------------------------------------------------------------------------------------
def make_affectnet_csv(root: Path) -> dict:
    header = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"
    rows = {"training.csv": [], "validation.csv": []}
    values = {}
    for csv_name in rows:
        for expression in range(11):
            name = f"{csv_name[:3]}/{expression:02d}.jpg"
            write(root / "Manually_Annotated_Images" / name, image_bytes())
            valence, arousal = round(expression / 10 - 0.5, 2), round(0.25 - expression / 20, 2)
            rows[csv_name].append(f'{name},0,0,12,12,"1.0;2.0",{expression},{valence},{arousal}')
            values[name] = (expression, valence, arousal)
    rows["training.csv"].append("tra/12.jpg,0,0,12,12,,12,0.1,0.1")  # id 12 does not exist
    rows["validation.csv"].append("val/missing.jpg,0,0,12,12,,3,0.1,0.1")
    for csv_name, lines in rows.items():
        write(root / "Manually_Annotated_file_lists" / csv_name, header + "\n".join(lines) + "\n")
    return values


@pytest.mark.parametrize("benchmark, num_classes", [("affectnet-7", 7), ("affectnet-8", 8)])
def test_affectnet_csv(tmp_path, benchmark, num_classes):
    values = make_affectnet_csv(tmp_path / "raw")
    out = tmp_path / "out"
    assert run_cli(tmp_path / "raw", out, benchmark) == 0
    dataset = datasets.load_from_disk(str(out))
    assert sorted(dataset) == ["test", "train"]  # validation.csv is the literature's test set
    assert dataset["train"].features["label"].names == AFFECTNET_8[:num_classes]
    assert counts(dataset["train"]) == [1] * num_classes and counts(dataset["test"]) == [1] * num_classes
    assert set(dataset["train"].column_names) == {"image", "label", "valence", "arousal", "face_box"}
    assert dataset["train"][0]["face_box"] == [0, 0, 12, 12]
    raw_rows = dataset["test"].cast_column("image", datasets.Image(decode=False))
    for row in raw_rows:
        expression, valence, arousal = values[f"val/{row['image']['path']}"]
        assert row["label"] == expression
        assert row["valence"] == pytest.approx(valence) and row["arousal"] == pytest.approx(arousal)
    report = report_of(out)
    excluded = report["excluded_counts"]
    assert excluded["affectnet_none"] == 2 and excluded["affectnet_uncertain"] == 2 and excluded["affectnet_no-face"] == 2
    assert excluded.get("affectnet_contempt_not_in_7_classes", 0) == (2 if num_classes == 7 else 0)
    assert files_of(report, "label_out_of_range") == ["12.jpg"]
    assert files_of(report, "missing_file") == ["missing.jpg"]
    assert report["num_issues"] == 2  # exclusions by definition are not issues


def test_affectnet_npy_layout_and_class_folders(tmp_path):
    root = tmp_path / "npy"
    for split_dir in ("train_set", "val_set"):
        for i, expression in enumerate([0, 1, 2, 3, 4, 5, 6, 7, 9]):
            write(root / split_dir / "images" / f"{i}.jpg", image_bytes())
            for suffix, value in (("exp", str(expression)), ("val", "0.5"), ("aro", "-0.25")):
                (root / split_dir / "annotations").mkdir(parents=True, exist_ok=True)
                np.save(root / split_dir / "annotations" / f"{i}_{suffix}.npy", np.array(value))
    out = tmp_path / "out_npy"
    assert run_cli(root, out, "affectnet-8") == 0
    dataset = datasets.load_from_disk(str(out))
    assert counts(dataset["train"]) == [1] * 8 and counts(dataset["test"]) == [1] * 8
    assert dataset["test"][0]["valence"] == pytest.approx(0.5) and dataset["test"][0]["arousal"] == pytest.approx(-0.25)
    assert report_of(out)["excluded_counts"] == {"affectnet_uncertain": 2}

    folders = tmp_path / "folders"  # POSTER V2: train/ and valid/ with id folders 0..7
    for split_dir in ("train", "valid"):
        for expression in range(8):
            write(folders / split_dir / str(expression) / "a.jpg", image_bytes())
    out = tmp_path / "out_folders"
    assert run_cli(folders, out, "affectnet-7") == 0
    dataset = datasets.load_from_disk(str(out))
    assert counts(dataset["test"]) == [1] * 7
    assert report_of(out)["excluded_counts"] == {"affectnet_contempt_not_in_7_classes": 2}


# ---------------------------------------------------------------------------------------------
# FER2013 and FERPlus
# ---------------------------------------------------------------------------------------------
def pixel_string(rng: np.random.Generator) -> tuple[str, np.ndarray]:
    pixels = rng.integers(0, 256, (48, 48), dtype=np.uint8)
    return " ".join(map(str, pixels.reshape(-1))), pixels


def make_fer2013_csv(path: Path, labels_by_usage: dict[str, list[int]], seed: int = 0) -> list[tuple[str, int, np.ndarray]]:
    rng = np.random.default_rng(seed)
    rows, lines = [], ["emotion,pixels,Usage"]
    for usage, labels in labels_by_usage.items():
        for label in labels:
            text, pixels = pixel_string(rng)
            lines.append(f"{label},{text},{usage}")
            rows.append((usage, label, pixels))
    write(path, "\n".join(lines) + "\n")
    return rows


def test_fer2013_pixel_csv(tmp_path):
    root = tmp_path / "raw"
    labels = {"Training": list(range(7)) * 2, "PublicTest": list(range(7)), "PrivateTest": list(range(7))}
    rows = make_fer2013_csv(root / "fer2013.csv", labels)
    with open(root / "fer2013.csv", "a") as handle:
        handle.write("3,1 2 3,Training\n")  # 3 pixels: unreadable
        handle.write(f"7,{pixel_string(_rng)[0]},PrivateTest\n")  # emotion 7 does not exist
        handle.write(f"1,{pixel_string(_rng)[0]},Unused\n")  # unknown Usage
    out = tmp_path / "out"
    assert run_cli(root, out, "fer2013") == 0
    dataset = datasets.load_from_disk(str(out))
    assert sorted(dataset) == ["test", "train", "validation"]
    assert dataset["train"].features["label"].names == FER2013
    assert counts(dataset["train"]) == [2] * 7 and counts(dataset["validation"]) == [1] * 7 and counts(dataset["test"]) == [1] * 7
    image = dataset["test"][0]["image"]
    assert image.mode == "L" and image.size == (48, 48)
    test_rows = [r for r in rows if r[0] == "PrivateTest"]
    np.testing.assert_array_equal(np.asarray(image), test_rows[0][2])  # PNG is lossless
    report = report_of(out)
    assert report["issue_counts"]["unreadable_image"] == 1 and "2304" in report["issues"]["unreadable_image"][0]["detail"]
    assert files_of(report, "label_out_of_range") == [f"fer{len(rows) + 1:07d}.png"]
    assert report["issue_counts"]["malformed_row"] == 1


@pytest.mark.parametrize(
    "votes, label, reason",
    [
        ([10, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0, ""),
        ([4, 1, 1, 1, 1, 1, 1, 0, 0, 0], 0, ""),  # single votes are outliers: 4 of 4
        ([5, 5, 0, 0, 0, 0, 0, 0, 0, 0], None, "no_majority"),  # a tie is not > 1/2
        ([0, 0, 0, 0, 0, 0, 0, 2, 0, 0], 7, ""),  # contempt
        ([2, 0, 0, 0, 0, 0, 0, 0, 6, 2], None, "majority_unknown"),
        ([3, 0, 0, 0, 0, 0, 0, 0, 0, 7], None, "majority_not_face"),
        ([1, 1, 1, 1, 1, 1, 1, 1, 1, 1], None, "no_votes"),
        ([0, 4, 3, 0, 0, 0, 0, 0, 0, 0], 1, ""),
        ([0, 3, 3, 2, 0, 0, 0, 0, 0, 0], None, "no_majority"),
    ],
)
def test_ferplus_majority_rule(votes, label, reason):
    assert ferplus_majority_label(votes) == (label, reason)


def test_ferplus_soft_label_ignores_unknown_and_not_face():
    assert ferplus_soft_label([2, 2, 0, 0, 0, 0, 0, 0, 5, 1]) == [0.5, 0.5, 0, 0, 0, 0, 0, 0]
    assert ferplus_soft_label([0, 0, 0, 0, 0, 0, 0, 0, 9, 1]) == [0.0] * 8


def ferplus_votes() -> list[tuple[list[int], int | None, str]]:
    """Vote rows covering every class and every exclusion reason, with the expected outcome."""
    cases = []
    for c in range(8):
        votes = [0] * 10
        votes[c], votes[(c + 1) % 8] = 7, 3
        cases.append((votes, c, ""))
    cases += [([5, 5, 0, 0, 0, 0, 0, 0, 0, 0], None, "ferplus_no_majority"), ([0, 0, 0, 0, 0, 0, 0, 0, 8, 2], None, "ferplus_majority_unknown"),
              ([0, 2, 0, 0, 0, 0, 0, 0, 0, 8], None, "ferplus_majority_not_face")]
    return cases


def make_ferplus(root: Path, with_folders: bool) -> dict:
    cases = ferplus_votes()
    usages = ("Training", "PublicTest", "PrivateTest")
    rng = np.random.default_rng(7)
    new_lines = ["Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"]
    old_lines = ["emotion,pixels,Usage"]
    expected = {u: [] for u in usages}
    index = 0
    for usage in usages:
        for votes, label, reason in cases + [([10, 0, 0, 0, 0, 0, 0, 0, 0, 0], None, "ferplus_removed_image")]:
            text, pixels = pixel_string(rng)
            name = "" if reason == "ferplus_removed_image" else f"fer{index:07d}.png"
            new_lines.append(f"{usage},{name}," + ",".join(map(str, votes)))
            old_lines.append(f"0,{text},{usage}")
            if with_folders and name:
                folder = {"Training": "FER2013Train", "PublicTest": "FER2013Valid", "PrivateTest": "FER2013Test"}[usage]
                buffer = io.BytesIO()
                Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
                write(root / folder / name, buffer.getvalue())
            expected[usage].append((name, votes, label, reason, pixels))
            index += 1
    write(root / "fer2013new.csv", "\n".join(new_lines) + "\n")
    if not with_folders:
        write(root / "fer2013.csv", "\n".join(old_lines) + "\n")
    return expected


@pytest.mark.parametrize("with_folders", [False, True], ids=["ferplus-csv", "ferplus-folders"])
def test_ferplus_votes_soft_labels_and_exclusions(tmp_path, with_folders):
    expected = make_ferplus(tmp_path / "raw", with_folders)
    out = tmp_path / "out"
    assert run_cli(tmp_path / "raw", out, "ferplus") == 0
    dataset = datasets.load_from_disk(str(out))
    report = report_of(out)
    assert report["layout"] == ("ferplus-folders" if with_folders else "ferplus-csv")
    assert sorted(dataset) == ["test", "train", "validation"]
    for split, usage in (("train", "Training"), ("validation", "PublicTest"), ("test", "PrivateTest")):
        part = dataset[split]
        assert part.features["label"].names == FERPLUS
        assert part.features["votes"].length == 10 and part.features["soft_label"].length == 8
        kept = [row for row in expected[usage] if row[2] is not None]
        assert len(part) == len(kept) == 8
        for example, (name, votes, label, _, pixels) in zip(part, kept):
            assert example["label"] == label and example["votes"] == votes
            emotion_votes = np.asarray(votes[:8], float)
            np.testing.assert_allclose(example["soft_label"], emotion_votes / emotion_votes.sum(), rtol=1e-6)
            np.testing.assert_array_equal(np.asarray(example["image"]), pixels)
    excluded = report["excluded_counts"]
    assert excluded == {"ferplus_no_majority": 3, "ferplus_majority_unknown": 3, "ferplus_majority_not_face": 3, "ferplus_removed_image": 3}
    assert report["num_issues"] == 0
    assert any("majority rule" in note for note in report["notes"])


def test_ferplus_unaligned_files_fail_clearly(tmp_path, capsys):
    expected = make_ferplus(tmp_path / "raw", with_folders=False)
    lines = (tmp_path / "raw" / "fer2013.csv").read_text().splitlines()
    (tmp_path / "raw" / "fer2013.csv").write_text("\n".join(lines[:-1]) + "\n")  # one image short
    assert run_cli(tmp_path / "raw", tmp_path / "out", "ferplus") == 2
    err = capsys.readouterr().err
    assert "must have one row per image in the same order" in err and f"row {sum(map(len, expected.values())) - 1}" in err


def test_ferplus_jin2_swapped_split_names(tmp_path):
    root = tmp_path / "raw" / "data"
    lines = ["Usage,Image Name,0,1,2,3,4,5,6,7,UNK,NF,emotion"]
    for usage, folder in (("Training", "train"), ("PublicTest", "test"), ("PrivateTest", "valid")):
        for label in range(8):
            name = f"{folder}{label}.png"
            write(root / folder / name, image_bytes("PNG", 48, "L"))
            one_hot = ["1" if i == label else "0" for i in range(8)]
            lines.append(f"{usage},{name},{','.join(one_hot)},0,0,{label}")
    write(root / "fer2013new_jin2.csv", "\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert run_cli(tmp_path / "raw", out, "ferplus") == 0
    dataset = datasets.load_from_disk(str(out))
    assert report_of(out)["layout"] == "ferplus-jin2"
    test_names = dataset["test"].cast_column("image", datasets.Image(decode=False))["image"]
    assert {Path(row["path"]).name for row in test_names} == {f"test{label}.png" for label in range(8)}  # jin2 PublicTest = official test
    assert counts(dataset["validation"]) == [1] * 8
    assert dataset["train"][3]["soft_label"] == [0, 0, 0, 1, 0, 0, 0, 0]


# ---------------------------------------------------------------------------------------------
# SFEW, CAER-S, FER2013 folders: class folders in alphabetical label order
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "benchmark, split_dirs, class_dirs",
    [
        ("sfew", ("Train", "Val"), ["Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"]),
        ("caer-s", ("train", "test"), ["Anger", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"]),
        ("fer2013", ("train", "test"), ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]),
    ],
)
def test_class_folder_benchmarks(tmp_path, benchmark, split_dirs, class_dirs):
    root = tmp_path / "raw" / "wrapper"  # one wrapper folder is looked through
    for split_dir in split_dirs:
        for i, class_dir in enumerate(class_dirs):
            for k in range(i % 2 + 1):
                write(root / split_dir / class_dir / f"{k}.jpg", image_bytes())
    write(root / split_dir / "Happy" / "broken.jpg", b"\xff\xd8\xff not really")
    out = tmp_path / "out"
    assert run_cli(tmp_path / "raw", out, benchmark) == 0
    dataset = datasets.load_from_disk(str(out))
    names = get_label_names(benchmark)
    assert sorted(dataset) == ["test", "train"]
    assert dataset["train"].features["label"].names == names
    per_name = {canonical: i % 2 + 1 for i, canonical in enumerate(["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"] if benchmark != "fer2013" else FER2013)}
    assert counts(dataset["test"]) == [per_name[n] for n in names]
    assert files_of(report_of(out), "unreadable_image") == ["broken.jpg"]


def test_unknown_class_folder_and_empty_class(tmp_path):
    root = tmp_path / "raw"
    for split in ("train", "test"):
        for class_dir in ["Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad"]:  # no Surprise
            write(root / split / class_dir / "a.jpg", image_bytes())
    write(root / "train" / "Bored" / "b.jpg", image_bytes())
    out = tmp_path / "out"
    assert run_cli(root, out, "sfew") == 0
    report = report_of(out)
    assert files_of(report, "label_out_of_range") == ["b.jpg"]
    empty = report["issues"]["empty_class"]
    assert sorted(row["split"] for row in empty) == ["test", "train"]
    assert all("surprise" in row["detail"] for row in empty)


# ---------------------------------------------------------------------------------------------
# CLI errors and Hub push routing
# ---------------------------------------------------------------------------------------------
def test_cli_errors_are_one_line(tmp_path, capsys):
    assert run_cli(tmp_path / "nope", tmp_path / "out", "raf-db") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "does not exist" in err and "\n" not in err
    (tmp_path / "empty").mkdir()
    assert run_cli(tmp_path / "empty", tmp_path / "out", "caer-s") == 2
    assert "no split folders" in capsys.readouterr().err
    assert run_cli(tmp_path / "empty", tmp_path / "out", "jaffe") == 2
    assert "unknown benchmark 'jaffe'" in capsys.readouterr().err
    with pytest.raises(benchmarks.BenchmarkError):
        run_cli(tmp_path / "nope", tmp_path / "out", "raf-db", "--debug")


def test_push_to_hub_is_routed_to_datasets(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(datasets.DatasetDict, "push_to_hub", lambda self, repo_id, **kw: calls.append((repo_id, sorted(self), kw.get("private"))))
    root = tmp_path / "raw"
    for split in ("train", "test"):
        for class_dir in ["Anger", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"]:
            write(root / split / class_dir / "a.png", image_bytes("PNG"))
    assert run_cli(root, tmp_path / "out", "caer-s", "--push-to-hub", "me/caer-s", "--private") == 0
    assert calls == [("me/caer-s", ["test", "train"], True)]
    assert (tmp_path / "out" / "validation_report.json").exists()


def test_script_wrapper_matches_library_parser():
    script = (Path(__file__).resolve().parent.parent / "scripts" / "prepare_dataset.py").read_text()
    assert "from hf_fer.data.benchmarks import main" in script
    flags = {a for action in benchmarks.build_parser()._actions for a in action.option_strings}
    assert {"--benchmark", "--raw-dir", "--output", "--push-to-hub", "--strict"} <= flags


def test_copy_of_raw_is_not_needed_after_prepare(tmp_path):
    """The saved dataset embeds the image bytes: it must not depend on the raw files or the build cache."""
    make_raf_list(tmp_path / "raw", per_class=1)
    out = tmp_path / "out"
    assert run_cli(tmp_path / "raw", out, "raf-db") == 0
    shutil.rmtree(tmp_path / "raw")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hf_fer_build_")]
    assert datasets.load_from_disk(str(out))["train"][0]["image"].size == (12, 12)


def test_unrecognised_raw_dir_says_what_is_expected(tmp_path, capsys):
    write(tmp_path / "raw" / "train.csv", "emotion,pixels\n")  # Kaggle's variant without Usage
    assert run_cli(tmp_path / "raw", tmp_path / "out", "fer2013") == 2
    assert "fer2013.csv (emotion, pixels, Usage)" in capsys.readouterr().err
    assert run_cli(tmp_path / "raw", tmp_path / "out", "raf-db", "--layout", "fer2013-csv") == 2
    assert "layout 'fer2013-csv' is for fer2013, not raf-db" in capsys.readouterr().err
