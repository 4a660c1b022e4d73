"""``hf-fer predict`` on photos: the shipped default model offline, detection on by default, output files,
annotated images, ``--boxes``, bad files skipped (the generated malformed-image corpus)."""
import csv
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

FACES = Path(__file__).parent / "fixtures" / "faces"
PHOTOS = [FACES / f"sample{i}.jpg" for i in range(1, 7)]
EXPECTED = json.loads((FACES / "expected_faces.json").read_text())["images"]


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for photo in PHOTOS[:3]:
        shutil.copy(photo, folder / photo.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return folder


def test_default_model_writes_jsonl_csv_parquet_and_annotations(photo_folder, tmp_path, capsys):
    import pyarrow.parquet as pq

    from hf_fer.cli import main

    expected_faces = sum(len(EXPECTED[p.name]["faces"]) for p in PHOTOS[:3])  # 9
    outputs = {}
    for suffix in ("jsonl", "csv", "parquet"):
        outputs[suffix] = tmp_path / f"results.{suffix}"
        extra = ["--annotate", str(tmp_path / "annotated")] if suffix == "jsonl" else []
        assert main(["predict", str(photo_folder), "--top-k", "3", "--batch-size", "2", "--output", str(outputs[suffix]), *extra]) == 0
    captured = capsys.readouterr()
    announced = [line for line in captured.err.splitlines() if line.startswith("hf-fer predict:")]
    assert len(announced) == 3 and "shipped default model" in announced[0] and "detected" in announced[0]
    assert "broken.jpg" in captured.err and "skipped 1 unreadable file(s) of 4" in captured.err
    # Table: labelled columns, one row per face.
    header = captured.out.splitlines()[0].split()
    assert header == ["file", "face", "xmin", "ymin", "xmax", "ymax", "det", "label_1", "score_1", "label_2", "score_2", "label_3", "score_3"]
    records = [json.loads(line) for line in outputs["jsonl"].read_text().splitlines()]
    assert [Path(r["file"]).name for r in records] == ["broken.jpg", "sample1.jpg", "sample2.jpg", "sample3.jpg"]
    assert "error" in records[0] and sum(len(r["faces"]) for r in records[1:]) == expected_faces
    with open(outputs["csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    face_rows = [row for row in rows if row["face"] != ""]
    assert len(face_rows) == expected_faces and rows[0]["error"]
    assert {"label_1", "score_1", "label_3", "score_3", "right_eye_x", "left_mouth_y", "detection_score"} <= set(rows[0])
    table = pq.read_table(outputs["parquet"]).to_pylist()
    assert len([row for row in table if row["face"] is not None]) == expected_faces
    # The three files agree with each other.
    first = next(r for r in records if Path(r["file"]).name == "sample1.jpg")["faces"][0]
    row = next(r for r in table if r["file"].endswith("sample1.jpg") and r["face"] == 0)
    assert row["label_1"] == first["labels"][0]["label"] and row["score_1"] == pytest.approx(first["labels"][0]["score"])
    assert row["xmin"] == pytest.approx(first["box"]["xmin"])
    # Annotated photos: same size as the input, pixels changed inside a face box.
    for photo in PHOTOS[:3]:
        drawn = Image.open(tmp_path / "annotated" / photo.name)
        assert drawn.size == Image.open(photo).size
    assert not (tmp_path / "annotated" / "broken.jpg").exists()


def test_boxes_file_csv_and_json(tmp_path, capsys):
    from hf_fer.cli import main

    faces = EXPECTED["sample2.jpg"]["faces"]
    boxes_csv = tmp_path / "boxes.csv"
    with open(boxes_csv, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "xmin", "ymin", "xmax", "ymax"])
        for face in faces:
            writer.writerow(["sample2.jpg", *face["box"]])
    out = tmp_path / "from_csv.jsonl"
    assert main(["predict", str(PHOTOS[1]), str(PHOTOS[2]), "--boxes", str(boxes_csv), "--output", str(out), "--quiet"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [[f["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")] for f in records[0]["faces"]] == [[float(v) for v in f["box"]] for f in faces]
    assert "not in the --boxes file" in records[1]["error"]  # photos without boxes are reported, not guessed
    boxes_json = tmp_path / "boxes.json"
    boxes_json.write_text(json.dumps({"sample2.jpg": [{"box": f["box"], "landmarks": f["landmarks"]} for f in faces]}))
    out_json = tmp_path / "from_json.jsonl"
    assert main(["predict", str(PHOTOS[1]), "--boxes", str(boxes_json), "--output", str(out_json), "--quiet"]) == 0
    (record,) = [json.loads(line) for line in out_json.read_text().splitlines()]
    assert [f["landmarks"] for f in record["faces"]] == [[[float(v) for v in p] for p in f["landmarks"]] for f in faces]
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    assert main(["predict", str(PHOTOS[1]), "--boxes", str(bad)]) == 1
    assert "expected a JSON object" in capsys.readouterr().err


def test_malformed_corpus_through_predict(tmp_path, capsys):
    """Every malformed file: either decoded (a record with faces) or one clear per-file error; the run continues."""
    from malformed_corpus import make_malformed_corpus

    from hf_fer.cli import main

    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir()
    corpus = make_malformed_corpus(corpus_dir)
    out = tmp_path / "corpus.jsonl"
    files = [str(corpus_dir / name) for name in sorted(corpus)]
    assert main(["predict", *files, str(PHOTOS[0]), "--output", str(out), "--quiet", "--batch-size", "4"]) == 0
    records = {Path(r["file"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(records) == set(corpus) | {"sample1.jpg"}
    for name, expectation in corpus.items():
        record = records[name]
        if expectation.ok:
            assert "faces" in record, (name, record)
        else:
            assert name in record["error"] and expectation.error in record["error"].lower(), (name, record)
    assert len(records["sample1.jpg"]["faces"]) == 3
    err = capsys.readouterr().err
    failures = sum(not e.ok for e in corpus.values())
    assert f"skipped {failures} unreadable file(s) of {len(corpus) + 1}" in err


def test_photo_urls_are_photos_not_streams(http_folder, tmp_path, capsys):
    """An http(s) URL naming an image file is fetched and detected like the file (a stream URL stays a video)."""
    from hf_fer.cli import main
    from hf_fer.faces.video import is_video_source

    base, folder = http_folder
    shutil.copy(PHOTOS[0], folder / "group.jpg")
    out, reference = tmp_path / "url.jsonl", tmp_path / "file.jsonl"
    assert main(["predict", f"{base}/group.jpg?size=full", "--output", str(out), "--quiet"]) == 0
    assert main(["predict", str(PHOTOS[0]), "--output", str(reference), "--quiet"]) == 0
    (record,), (expected,) = (list(map(json.loads, f.read_text().splitlines())) for f in (out, reference))
    assert record["file"] == f"{base}/group.jpg?size=full" and record["faces"] == expected["faces"]
    assert len(record["faces"]) == 3
    assert is_video_source("https://example.com/live/stream.m3u8") and is_video_source("rtsp://camera/1")
    assert not is_video_source("https://example.com/photos/a.JPG?x=1")


def test_annotate_a_photo_over_max_image_size_draws_at_full_size(tmp_path):
    """Photos over the pipeline's max_image_size (4096 px) are reduced for detection; the annotated image is still the
    photo as displayed, full size, with each box drawn where the face is (it used to be the reduced image with
    full-size coordinates)."""
    from hf_fer.cli import main
    from hf_fer.faces.pipeline import DEFAULT_MAX_IMAGE_SIZE
    from hf_fer.faces.video import _PALETTE

    factor = 4400 / 1920
    big = tmp_path / "big.jpg"
    with Image.open(PHOTOS[4]) as photo:  # sample5.jpg, 1920x1398, 5 faces
        photo.resize((4400, round(photo.height * factor)), Image.Resampling.BILINEAR).save(big, quality=90)
    size = Image.open(big).size
    assert max(size) > DEFAULT_MAX_IMAGE_SIZE
    out = tmp_path / "big.jsonl"
    assert main(["predict", str(big), "--annotate", str(tmp_path / "annotated"), "--output", str(out), "--quiet"]) == 0
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    faces = record["faces"]
    expected = [[v * factor for v in face["box"]] for face in EXPECTED["sample5.jpg"]["faces"]]
    assert len(faces) == len(expected) == 5
    for face in faces:  # coordinates in full-size pixels: each box lands on an expected face
        box = [face["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")]
        assert max(_iou(box, other) for other in expected) >= 0.5, box
    drawn = Image.open(tmp_path / "annotated" / "big.jpg").convert("RGB")
    assert drawn.size == size
    for number, face in enumerate(faces):  # the box outline (9 px wide at this size) is where the box is
        box = face["box"]
        pixel = drawn.getpixel((round(box["xmin"]) + 3, round((box["ymin"] + box["ymax"]) / 2)))
        assert max(abs(a - b) for a, b in zip(pixel, _PALETTE[number % len(_PALETTE)])) <= 40, (number, pixel)


def _iou(a, b):
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_annotations_of_same_named_photos_in_different_folders_never_overwrite_each_other(tmp_path, capsys):
    """``--recursive`` over a/group.jpg and b/group.jpg: the drawings mirror the folders (each photo's own size);
    a photo with no extension is drawn as ``<name>.png``; nothing half-written is left beside them."""
    from hf_fer.cli import main

    top = tmp_path / "photos"
    for folder, photo in (("a", PHOTOS[0]), ("b", PHOTOS[4])):
        (top / folder).mkdir(parents=True)
        shutil.copy(photo, top / folder / "group.jpg")
    shutil.copy(PHOTOS[1], top / "IMG_0001")
    annotated = tmp_path / "annotated"
    assert main(["predict", str(top), str(top / "IMG_0001"), "--recursive", "--annotate", str(annotated), "--quiet"]) == 0
    assert "3 image(s)" in capsys.readouterr().err
    written = sorted(str(p.relative_to(annotated)) for p in annotated.rglob("*") if p.is_file())
    assert written == ["IMG_0001.png", "a/group.jpg", "b/group.jpg"], written
    for name, photo in (("a/group.jpg", PHOTOS[0]), ("b/group.jpg", PHOTOS[4]), ("IMG_0001.png", PHOTOS[1])):
        assert Image.open(annotated / name).size == Image.open(photo).size, name


def test_parquet_results_appear_only_complete_and_a_killed_run_keeps_the_last_file(tmp_path):
    """Parquet is unreadable until its footer is written: rows go to a side file renamed at close, so the path
    holds either the previous complete results or the new ones, never a torn file."""
    import pyarrow.parquet as pq

    from hf_fer.faces.video import ResultWriter

    path = tmp_path / "results.parquet"
    face = {"box": {"xmin": 1.0, "ymin": 2.0, "xmax": 3.0, "ymax": 4.0}, "detection_score": 0.9, "landmarks": None,
            "labels": [{"label": "happiness", "score": 0.8}]}
    with ResultWriter(path, top_k=1) as first:
        first.write({"file": "old.jpg", "faces": [face]})
    writer = ResultWriter(path, top_k=1, row_group_size=1)  # every record flushed at once
    for number in range(3):
        writer.write({"file": f"new{number}.jpg", "faces": [face]})
    # Mid-run (a kill here loses only this run): the last complete results are still readable at the path.
    assert [row["file"] for row in pq.read_table(path).to_pylist()] == ["old.jpg"]
    writer.close()
    assert [row["file"] for row in pq.read_table(path).to_pylist()] == ["new0.jpg", "new1.jpg", "new2.jpg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.parquet"]


def _crowd(path: Path) -> list[list[float]]:
    """A 5760x2800 'crowd': the six test photos at 960x700, in a 3x2 grid, repeated 2x2 (88 faces of 25-90 px).
    Returns the reference boxes (expected_faces.json, scaled and moved into place)."""
    import numpy as np

    tiles, boxes = [], []
    for index, photo in enumerate(PHOTOS):
        image = Image.open(photo).convert("RGB")
        sx, sy = 960 / image.width, 700 / image.height
        tiles.append(np.asarray(image.resize((960, 700), Image.BILINEAR)))
        for repeat_y in range(2):
            for repeat_x in range(2):
                ox, oy = 960 * (index % 3) + 2880 * repeat_x, 700 * (index // 3) + 1400 * repeat_y
                boxes += [[b[0] * sx + ox, b[1] * sy + oy, b[2] * sx + ox, b[3] * sy + oy] for b in (f["box"] for f in EXPECTED[photo.name]["faces"])]
    grid = np.concatenate([np.concatenate(tiles[row * 3:row * 3 + 3], axis=1) for row in range(2)], axis=0)
    Image.fromarray(np.tile(grid, (2, 2, 1))).save(path, quality=92)
    return boxes


def test_detection_size_finds_the_small_faces_of_a_crowd(tmp_path, capsys):
    """At the default 640 px working size the faces of a large crowd photo shrink below what the detector finds
    (13 of 88 here); --detection-size 1920 finds all 88, each at its reference box."""
    import torch
    from torchvision.ops import box_iou

    from hf_fer.cli import main

    reference = torch.tensor(_crowd(tmp_path / "crowd.jpg"))
    found = {}
    for size in ("640", "1920"):
        output = tmp_path / f"faces_{size}.jsonl"
        assert main(["predict", str(tmp_path / "crowd.jpg"), "--detection-size", size, "--output", str(output), "--quiet"]) == 0
        faces = json.loads(output.read_text())["faces"]
        found[size] = torch.tensor([[f["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")] for f in faces])
    assert f"at a 1920 px long side" in capsys.readouterr().err
    assert len(found["640"]) < 44  # what the default misses is the point of the option
    assert len(found["1920"]) == 88
    iou = box_iou(reference, found["1920"])
    assert (iou.max(dim=1).values >= 0.5).all() and len(set(iou.argmax(dim=1).tolist())) == 88


@pytest.mark.parametrize("value, accepted", [("full", None), ("1280", 1280), ("32", 32), ("16", "at least 32"), ("big", "expected an integer")])
def test_detection_size_argument(value, accepted, capsys):
    from hf_fer_cli.parsers import predict_parser

    from hf_fer.faces.pipeline import DEFAULT_DETECTION_SIZE

    parser = predict_parser()
    assert parser.parse_args(["x.jpg"]).detection_size == DEFAULT_DETECTION_SIZE  # the CLI's literal default agrees
    if isinstance(accepted, str):
        with pytest.raises(SystemExit) as stop:
            parser.parse_args(["x.jpg", "--detection-size", value])
        assert stop.value.code == 2 and accepted in capsys.readouterr().err
    else:
        assert parser.parse_args(["x.jpg", "--detection-size", value]).detection_size == accepted
