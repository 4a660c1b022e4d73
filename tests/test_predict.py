"""``hf-fer predict --no-detect`` on aligned face crops: batched over files and folders, unreadable files skipped and reported.

(Face detection on photos, videos and output files: tests/test_face_predict.py and test_face_video.py.)
"""
import json

import pytest

import test_evaluation_fixtures as fx


@pytest.fixture(scope="module")
def toy():
    with fx.toy_architecture() as arch:
        yield arch


@pytest.fixture
def image_folder(tmp_path):
    from harness import synthetic_face

    folder = tmp_path / "faces"
    folder.mkdir()
    for index, expression in enumerate(("happiness", "anger", "neutral")):
        synthetic_face(48, seed=index, expression=expression).save(folder / f"face_{index}.png")
    fx.write_corrupt_image(folder / "face_1b_corrupt.png")
    (folder / "notes.txt").write_text("not an image, ignored by extension")
    return folder


def test_predict_json_skips_and_reports_the_corrupt_file(toy, tmp_path, image_folder, capsys):
    from PIL import Image

    from hf_fer.cli import main

    model_dir = fx.save_toy_model(tmp_path / "model")
    assert main(["predict", "--model", str(model_dir), str(image_folder), "--no-detect", "--json", "--top-k", "2", "--batch-size", "2"]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.strip().splitlines()]
    assert [line["file"].rsplit("/", 1)[-1] for line in lines] == ["face_0.png", "face_1.png", "face_1b_corrupt.png", "face_2.png"]
    assert "error" in lines[2] and "face_1b_corrupt.png" in lines[2]["error"]
    assert "skipped 1 unreadable file(s) of 4" in captured.err and "face_1b_corrupt.png" in captured.err
    announced = [line for line in captured.err.splitlines() if line.startswith("hf-fer predict:")]
    assert len(announced) == 1 and "no detection" in announced[0]  # the decision is announced on one line

    good = [line for line in lines if "error" not in line]
    images = [Image.open(image_folder / f"face_{i}.png").convert("RGB") for i in range(3)]
    probabilities = fx.reference_predictions(model_dir, images).softmax(-1)
    for line, row in zip(good, probabilities):
        (face,) = line["faces"]  # the whole crop is the face
        assert face["labels"][0]["label"] == fx.TOY_LABELS[int(row.argmax())]
        assert face["labels"][0]["score"] == pytest.approx(float(row.max()), abs=1e-5)
        assert len(face["labels"]) == 2 and face["labels"][0]["score"] >= face["labels"][1]["score"]


def test_predict_table_output(toy, tmp_path, image_folder, capsys):
    from hf_fer.cli import main

    model_dir = fx.save_toy_model(tmp_path / "model")
    assert main(["predict", "--model", str(model_dir), str(image_folder / "face_0.png"), "--top-k", "3", "--no-detect"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["file", "face", "xmin", "ymin", "xmax", "ymax", "det", "label_1", "score_1", "label_2", "score_2", "label_3", "score_3"]
    assert out[1].startswith(str(image_folder / "face_0.png")) and sum(name in out[1] for name in fx.TOY_LABELS.values()) == 3


def test_predict_fails_clearly_when_nothing_is_readable(toy, tmp_path, capsys):
    from hf_fer.cli import main

    model_dir = fx.save_toy_model(tmp_path / "model")
    bad = fx.write_corrupt_image(tmp_path / "bad.jpg")
    assert main(["predict", "--model", str(model_dir), str(bad), "--no-detect"]) == 1
    assert "none of the 1 file(s) could be read" in capsys.readouterr().err
    assert main(["predict", "--model", str(model_dir), str(tmp_path / "missing.jpg")]) == 1
    err = capsys.readouterr().err.strip()
    assert "missing.jpg: no such file or folder" in err and err.count("\n") == 0


def test_predict_help_has_examples(capsys):
    from hf_fer.cli import main

    assert main(["predict", "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "--top-k" in out and "--json" in out and "--no-detect" in out and "--every-n-frames" in out


def test_bad_arguments_are_argument_errors_before_any_file_is_read(tmp_path, capsys):
    """A bad --fps or --smoothing is the command's error, said once before the model loads; it used to surface as
    every video being an 'unreadable file'."""
    from hf_fer.cli import main

    video = tmp_path / "clip.mp4"  # never opened: the arguments are refused first
    video.write_bytes(b"not read")
    for flag, value, message in (("--fps", "-1", "--fps must be positive, got -1.0"),
                                 ("--fps", "nan", "--fps must be positive, got nan"),
                                 ("--smoothing", "1.5", "--smoothing must be in [0, 1), got 1.5"),
                                 ("--every-n-frames", "0", "must be positive")):
        assert main(["predict", str(video), flag, value]) == 1
        err = capsys.readouterr().err
        assert message in err and "hf-fer predict: the shipped" not in err and "skipped" not in err, (flag, err)
