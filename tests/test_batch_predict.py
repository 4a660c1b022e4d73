"""Sharded batch prediction (``hf-fer predict --dataset``): every row exactly once over 2 processes, resume after a
kill, bad rows recorded, photos and videos with face detection."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
FACES = Path(__file__).parent / "fixtures" / "faces"
NUM_ROWS, BROKEN_ROW = 40, 7
OPTIONS = {"chunk_size": 8, "batch_size": 4, "quiet": True}


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    """40 synthetic faces saved with save_to_disk; row 7's image bytes are not an image."""
    import datasets

    from hf_fer.data.synthetic import make_synthetic_fer

    faces = make_synthetic_fer(NUM_ROWS, image_size=48, seed=3).cast_column("image", datasets.Image(decode=False))
    rows = faces.to_list()
    rows[BROKEN_ROW]["image"] = {"bytes": b"this is not an image", "path": "broken.png"}
    folder = tmp_path_factory.mktemp("data") / "faces"
    datasets.Dataset.from_list(rows, features=faces.features).cast_column("image", datasets.Image()).save_to_disk(str(folder))
    return folder


@pytest.fixture(scope="module")
def reference(dataset_dir, tmp_path_factory):
    """One uninterrupted single-process run."""
    from hf_fer.batch_predict import predict_dataset, read_predictions

    output = tmp_path_factory.mktemp("reference")
    index = predict_dataset(dataset_dir, output, **OPTIONS)
    return SimpleNamespace(output=output, index=index, table=read_predictions(output).to_pydict())


def _env(**extra):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    env.pop("ACCELERATE_USE_CPU", None)
    return env


def _assert_same_predictions(actual: dict, expected: dict):
    assert actual["row"] == expected["row"] and actual["id"] == expected["id"] and actual["error"] == expected["error"]
    assert actual["label_1"] == expected["label_1"]
    for got, want in zip(actual["probabilities"], expected["probabilities"]):
        assert (got is None) == (want is None)
        if got is not None:
            np.testing.assert_allclose(got, want, atol=1e-5)


def test_rows_are_predicted_once_with_the_models_own_probabilities_and_a_bad_row_is_recorded(reference, dataset_dir):
    import datasets
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    import hf_fer

    table = reference.table
    assert table["row"] == list(range(NUM_ROWS))  # no face detection: one record per row, in row order
    errors = [(row, error) for row, error in zip(table["row"], table["error"]) if error is not None]
    assert len(errors) == 1 and errors[0][0] == BROKEN_ROW and "broken.png" in errors[0][1] and "not an image" in errors[0][1]
    assert table["probabilities"][BROKEN_ROW] is None and table["label_1"][BROKEN_ROW] is None
    assert reference.index["num_rows"] == NUM_ROWS and reference.index["num_errors"] == 1
    assert reference.index["errors"][0]["row"] == BROKEN_ROW
    assert reference.index["label_names"] == ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]
    assert reference.index["dataset"]["fingerprint"].startswith("datasets:") and reference.index["shards"][0]["rows"] == [0, NUM_ROWS]

    # independent of the sharding/pipeline code: the model and its processor called directly on the decoded images
    model = AutoModelForImageClassification.from_pretrained(hf_fer.pretrained_path()).eval()
    processor = AutoImageProcessor.from_pretrained(hf_fer.pretrained_path())
    data = datasets.load_from_disk(str(dataset_dir)).cast_column("image", datasets.Image(decode=False))
    good = [row for row in range(NUM_ROWS) if row != BROKEN_ROW]
    from hf_fer.image_io import load_image

    images = [load_image(data[row]["image"]) for row in good]
    with torch.no_grad():
        expected = model(**processor(images=images, return_tensors="pt")).logits.softmax(-1).numpy()
    actual = np.array([table["probabilities"][row] for row in good])
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    names = reference.index["label_names"]
    assert [table["label_1"][row] for row in good] == [names[i] for i in expected.argmax(1)]
    top = [table["score_1"][row] for row in good]
    np.testing.assert_allclose(top, expected.max(1), atol=1e-5)


def test_two_cpu_processes_cover_every_row_exactly_once(reference, dataset_dir, tmp_path):
    from hf_fer.batch_predict import read_predictions

    output = tmp_path / "ddp"
    # the README's command: accelerate launch --cpu starts one process; hf_fer re-launches 2 gloo ranks
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "hf_fer.predict", "--dataset", str(dataset_dir),
         "--output", str(output), "--chunk-size", "8", "--batch-size", "4"],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-5000:]
    for rank in (0, 1):  # images/s reported per rank
        assert f"[rank {rank}/2] rows {20 * rank}..{20 * rank + 19}: 20 predicted" in result.stderr and "images/s" in result.stderr
    index = json.loads((output / "index.json").read_text())
    assert [shard["rows"] for shard in index["shards"]] == [[0, 20], [20, 40]] and index["num_shards"] == 2
    assert [shard["file"] for shard in index["shards"]] == ["shards/shard-00000-of-00002.parquet", "shards/shard-00001-of-00002.parquet"]
    assert sorted(p.name for p in (output / "shards").iterdir()) == ["shard-00000-of-00002.parquet", "shard-00001-of-00002.parquet"]
    assert not (output / ".chunks").exists()
    table = read_predictions(output).to_pydict()
    assert sorted(table["row"]) == list(range(NUM_ROWS)) and len(table["row"]) == NUM_ROWS
    _assert_same_predictions(table, reference.table)
    assert index["dataset"]["fingerprint"] == reference.index["dataset"]["fingerprint"]


def test_killed_run_resumes_at_its_last_chunk_and_gives_the_same_result(reference, dataset_dir, tmp_path, capsys):
    from hf_fer.batch_predict import BatchPredictError, predict_dataset, read_predictions

    output = tmp_path / "killed"
    killed = subprocess.run(
        [sys.executable, "-m", "hf_fer.cli", "predict", "--dataset", str(dataset_dir), "--output", str(output),
         "--chunk-size", "8", "--batch-size", "4"],
        cwd=REPO, env=_env(HF_FER_FAULT_POINT="batch_predict.chunk:2"), capture_output=True, text=True, timeout=600,
    )
    assert killed.returncode != 0, killed.stderr[-3000:]  # SIGKILLed right after its 2nd chunk file
    assert not (output / "index.json").exists() and not list((output / "shards").glob("*.parquet"))
    chunks = sorted(p.name for p in (output / ".chunks" / "shard-00000").glob("*.parquet"))
    assert chunks == ["rows-000000000000-000000000008.parquet", "rows-000000000008-000000000016.parquet"]

    with pytest.raises(BatchPredictError, match="top_k: was 3, now 2"):  # another run's settings never mix in
        predict_dataset(dataset_dir, output, top_k=2, **OPTIONS)

    capsys.readouterr()
    predict_dataset(dataset_dir, output, **dict(OPTIONS, quiet=False))
    log = capsys.readouterr().err
    assert "rows 0..39: 24 predicted" in log and "16 already done" in log, log
    assert "rows 0..7 written" not in log and "rows 16..23 written" in log
    _assert_same_predictions(read_predictions(output).to_pydict(), reference.table)

    # a finished run is verified and skipped; a damaged shard is redone
    predict_dataset(dataset_dir, output, **dict(OPTIONS, quiet=False))
    assert "is complete: skipped" in capsys.readouterr().err
    shard = output / "shards" / "shard-00000-of-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:100])
    predict_dataset(dataset_dir, output, **dict(OPTIONS, quiet=False))
    assert "cannot be read" in capsys.readouterr().err
    _assert_same_predictions(read_predictions(output).to_pydict(), reference.table)


def test_photos_and_videos_with_face_detection(tmp_path):
    from test_face_video import make_video

    from hf_fer.batch_predict import predict_dataset, read_predictions

    folder = tmp_path / "media"
    folder.mkdir()
    shutil.copy(FACES / "sample1.jpg", folder / "a_photo.jpg")
    (folder / "b_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    make_video(folder / "c_clip.mp4", num_frames=2)
    index = predict_dataset(folder, tmp_path / "out", face_detect=True, top_k=2, batch_size=4, quiet=True)
    table = read_predictions(tmp_path / "out").to_pylist()
    expected_faces = json.loads((FACES / "expected_faces.json").read_text())["images"]["sample1.jpg"]["num_faces"]
    photo = [r for r in table if r["row"] == 0]
    assert [r["face"] for r in photo] == list(range(expected_faces)) and photo[0]["id"].endswith("a_photo.jpg")
    assert all(r["detection_score"] > 0.8 and len(r["probabilities"]) == 7 and r["label_2"] is not None for r in photo)
    broken = [r for r in table if r["row"] == 1]
    assert len(broken) == 1 and "b_broken.jpg" in broken[0]["error"]
    video = [r for r in table if r["row"] == 2]
    assert sorted({r["frame"] for r in video}) == [0, 1] and len(video) == 2 * expected_faces
    assert all(r["track"] is not None and r["error"] is None for r in video)
    assert index["num_rows"] == 3 and index["num_errors"] == 1 and index["dataset"]["kind"] == "files"


def test_detection_size_reaches_the_detector_and_is_part_of_the_run(tmp_path):
    """--detection-size: the crowd photo's 88 faces are all found at 1920 px; resuming that folder at another size
    is refused (the rows would mix two detectors), at the same size it resumes."""
    from test_face_predict import _crowd

    from hf_fer.batch_predict import BatchPredictError, predict_dataset, read_predictions

    folder = tmp_path / "photos"
    folder.mkdir()
    _crowd(folder / "crowd.jpg")
    predict_dataset(folder, tmp_path / "out", face_detect=True, detection_size=1920, quiet=True)
    assert len(read_predictions(tmp_path / "out").to_pylist()) == 88
    with pytest.raises(BatchPredictError, match="detection_size: was 1920, now 640"):
        predict_dataset(folder, tmp_path / "out", face_detect=True, quiet=True)
    index = predict_dataset(folder, tmp_path / "out", face_detect=True, detection_size=1920, quiet=True)
    assert index["num_rows"] == 1 and index["num_errors"] == 0


def test_shard_bounds_are_accelerates_split():
    from accelerate import PartialState

    from hf_fer.batch_predict import shard_bounds

    for num_rows in (0, 1, 7, 40, 41):
        for world in (1, 2, 3, 8):
            covered = []
            for rank in range(world):
                fake_state = SimpleNamespace(num_processes=world, process_index=rank)
                with PartialState.split_between_processes(fake_state, list(range(num_rows))) as part:
                    start, end = shard_bounds(num_rows, rank, world)
                    assert list(range(start, end)) == (list(part) if world > 1 else list(range(num_rows)))
                    covered.extend(range(start, end))
            assert covered == list(range(num_rows))


def test_hub_style_dataset_folder_gives_the_same_predictions(reference, dataset_dir, tmp_path):
    import datasets

    from hf_fer.batch_predict import predict_dataset, read_predictions

    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    datasets.load_from_disk(str(dataset_dir)).to_parquet(str(repo / "data" / "test-00000-of-00001.parquet"))
    index = predict_dataset(repo, tmp_path / "out", **OPTIONS)
    assert index["dataset"]["split"] == "test" and index["num_errors"] == 1
    _assert_same_predictions(read_predictions(tmp_path / "out").to_pydict(), reference.table)


def test_an_unlabelled_dataset_is_predicted(dataset_dir, reference, tmp_path):
    """Batch prediction reads only the images: a test split whose labels are -1 (unlabelled, as Hub test splits
    often are) is predicted like the labelled one, while training and evaluation refuse such labels."""
    import datasets

    from hf_fer.batch_predict import predict_dataset, read_predictions
    from hf_fer.data.loading import DatasetLoadError, load_fer_dataset

    labelled = datasets.load_from_disk(str(dataset_dir))
    unlabelled = labelled.cast_column("image", datasets.Image(decode=False)).map(lambda row: {"label": -1})
    folder = tmp_path / "unlabelled"
    unlabelled.cast_column("image", datasets.Image()).save_to_disk(str(folder))
    with pytest.raises(DatasetLoadError, match="are not class indices"):
        load_fer_dataset(str(folder))
    predict_dataset(folder, tmp_path / "out", **OPTIONS)
    _assert_same_predictions(read_predictions(tmp_path / "out").to_pydict(), reference.table)
