"""``prepare-dataset --align``: RAF-DB originals aligned with their manual landmarks (or the detector when a file
has none), checked against an independent warp made with scikit-image."""
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FACES = Path(__file__).parent / "fixtures" / "faces"
EXPECTED = json.loads((FACES / "expected_faces.json").read_text())["images"]


def make_raf_originals(root: Path) -> list[dict]:
    """A tiny RAF-DB download: face regions of the test photos as Image/original/*, their 5 points in
    Annotation/manual/ (rows in RAF-DB's own order: eyes, nose, mouth corners), labels in EmoLabel/."""
    basic = root / "basic"
    for folder in ("EmoLabel", "Image/original", "Annotation/manual"):
        (basic / folder).mkdir(parents=True)
    photo = Image.open(FACES / "sample4.jpg").convert("RGB")
    rows, made = [], []
    for index, face in enumerate(EXPECTED["sample4.jpg"]["faces"]):
        x0, y0, x1, y1 = face["box"]
        pad = 60
        left, top = max(0, x0 - pad), max(0, y0 - pad)
        crop = photo.crop((left, top, x1 + pad, y1 + pad))
        split = "test" if index == 3 else "train"
        name = f"{split}_{index + 1:05d}.jpg"
        crop.save(basic / "Image" / "original" / name, quality=95)
        points = np.array(face["landmarks"], dtype=np.float64) - [left, top]
        if index != 2:  # image 3 ships no landmarks: the detector is used for it
            (basic / "Annotation" / "manual" / f"{name[:-4]}_manual.txt").write_text("\n".join(f"{x:.2f}\t{y:.2f}" for x, y in points) + "\n")
        rows.append(f"{name} {index % 7 + 1}")
        made.append({"name": name, "points": points, "split": split})
    (basic / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(rows) + "\n")
    return made


def test_prepare_dataset_align_raf_db(tmp_path, capsys):
    import datasets
    from skimage import transform

    from hf_fer.data.benchmarks import main
    from hf_fer.faces.alignment import RAFDB_ALIGNMENT

    made = make_raf_originals(tmp_path / "raw")
    out = tmp_path / "aligned"
    assert main(["--benchmark", "raf-db", "--raw-dir", str(tmp_path / "raw"), "--output", str(out), "--align", "--no-progress"]) == 0
    dataset = datasets.load_from_disk(str(out))
    assert dataset["train"].num_rows == 3 and dataset["test"].num_rows == 1
    description = dataset["train"].info.description
    assert "Faces aligned by hf_fer" in description and '"similarity_5pt"' in description
    assert "landmarks shipped with the benchmark: 3" in description and "RetinaFace detector: 1" in description
    report = json.loads((out / "validation_report.json").read_text())
    assert any("aligned faces" in note for note in report["notes"])

    template = np.array(RAFDB_ALIGNMENT["template"])
    for row, info in zip(dataset["train"], [m for m in made if m["split"] == "train"]):
        aligned = np.asarray(row["image"].convert("RGB"), dtype=np.float64)
        assert aligned.shape == (100, 100, 3)
        if info["name"] == "train_00003.jpg":
            continue  # aligned by the detector's points, not checkable against the shipped ones
        # Independent reference: scikit-image's least-squares similarity and warp (bilinear).
        original = np.asarray(Image.open(tmp_path / "raw" / "basic" / "Image" / "original" / info["name"]).convert("RGB"), dtype=np.float64)
        tform = transform.SimilarityTransform.from_estimate(info["points"], template)
        expected = transform.warp(original, tform.inverse, output_shape=(100, 100), order=1, preserve_range=True, mode="constant")
        assert np.abs(aligned - expected).mean() < 3.0, np.abs(aligned - expected).mean()


def test_landmark_conversions_by_hand():
    from hf_fer.data.face_alignment import landmarks_68_to_5, order_five_points

    points = np.zeros((68, 2))
    points[36:42] = [10, 20]  # image-left eye
    points[42:48] = [30, 20]
    points[30] = [20, 30]
    points[48], points[54] = [12, 40], [28, 40]
    assert landmarks_68_to_5(points).tolist() == [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]]
    swapped = np.array([[30, 20], [10, 20], [20, 30], [28, 40], [12, 40]])
    assert order_five_points(swapped).tolist() == [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]]
