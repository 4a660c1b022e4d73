"""What ``hf-fer`` prints: labelled, aligned tables; each decision a user should know on one line at the start;
under ``accelerate launch --num_processes 2`` every user-facing line once, and no library progress bars."""
import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import test_evaluation_fixtures as fx

REPO = Path(__file__).resolve().parents[1]
HDF5 = Path(__file__).parent / "fixtures" / "mini_xception" / "emotion_model.hdf5"


@pytest.fixture(scope="module")
def toy():
    with fx.toy_architecture() as arch:
        yield arch


def _column_ends(line: str) -> list[int]:
    """End position of each whitespace-separated cell."""
    ends, inside = [], False
    for index, char in enumerate(line + " "):
        if char != " " and not inside:
            inside = True
        elif char == " " and inside:
            inside = False
            ends.append(index)
    return ends


def test_predict_top_k_table_labels_and_aligns_every_column(toy, tmp_path, capsys):
    from harness import synthetic_face

    from hf_fer.cli import main

    model_dir = fx.save_toy_model(tmp_path / "model")
    folder = tmp_path / "crops"
    folder.mkdir()
    for index, name in enumerate(("a.png", "a_much_longer_file_name.png")):
        synthetic_face(48, seed=index).save(folder / name)
    assert main(["predict", str(folder), "--model", str(model_dir), "--no-detect", "--top-k", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    header, rows = out[0], out[1:]
    assert header.split() == ["file", "face", "xmin", "ymin", "xmax", "ymax", "det", "label_1", "score_1", "label_2", "score_2"]
    assert len(rows) == 2
    header_ends = _column_ends(header)
    for row in rows:
        cells = row.split()
        assert len(cells) == 11 and cells[7] in fx.TOY_LABELS.values() and cells[9] in fx.TOY_LABELS.values()
        ends = _column_ends(row)
        # numbers are right-aligned under their header: score_1 and score_2 end exactly where their names end
        for column in (1, 2, 3, 4, 5, 6, 8, 10):
            assert ends[column] == header_ends[column], (row, header)
        assert float(cells[8]) >= float(cells[10])


def test_batch_dependent_model_is_announced_on_the_one_start_line(tmp_path, capsys):
    from harness import synthetic_face

    from hf_fer import labels
    from hf_fer.cli import main
    from hf_fer.models.arm import ArmConfig, ArmForImageClassification, ArmImageProcessor

    names = labels.get_label_names("raf-db")
    config = ArmConfig(image_size=64, backbone_depths=[1, 1, 1, 1], affinity_mode="batch", id2label=dict(enumerate(names)),
                       label2id={n: i for i, n in enumerate(names)})
    ArmForImageClassification(config).save_pretrained(tmp_path / "arm")
    ArmImageProcessor(size={"height": 64, "width": 64}).save_pretrained(tmp_path / "arm")
    synthetic_face(64).save(tmp_path / "face.png")
    capsys.readouterr()  # (save_pretrained's own progress bar, outside any hf-fer command)
    assert main(["predict", str(tmp_path / "face.png"), "--model", str(tmp_path / "arm"), "--no-detect", "--quiet"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    started = [line for line in err if line.startswith("hf-fer predict:")]
    assert len(started) == 1 and "batch-dependent" in started[0] and err[0] == started[0]
    assert not any("affinity_mode" in line for line in err[1:])  # said once, not again as a warning


def test_convert_prints_the_class_order_it_chose(tmp_path, capsys):
    from hf_fer.cli import main

    assert main(["convert", "--arch", "mini_xception", "--checkpoint", str(HDF5), "--output", str(tmp_path / "default")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("hf-fer convert: fer2013 order (the converter's default: pass --dataset or --id2label")
    assert lines[0].endswith("0 anger, 1 disgust, 2 fear, 3 happiness, 4 sadness, 5 surprise, 6 neutral")
    assert main(["convert", "--arch", "mini_xception", "--checkpoint", str(HDF5), "--output", str(tmp_path / "raf"), "--dataset", "raf-db"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == ("hf-fer convert: raf-db order (from --dataset raf-db): "
                     "0 surprise, 1 fear, 2 disgust, 3 happiness, 4 sadness, 5 anger, 6 neutral")
    assert main(["convert", "--arch", "mini_xception", "--checkpoint", str(HDF5), "--output", str(tmp_path / "named"),
                 "--id2label", "neutral,anger,disgust,fear,happiness,sadness,surprise"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == "hf-fer convert: class names (from --id2label): 0 neutral, 1 anger, 2 disgust, 3 fear, 4 happiness, 5 sadness, 6 surprise"


TINY_ARM = {
    "model": {"arch": "arm", "label_space": "raf-db",
              "config": {"image_size": 64, "backbone_depths": [1, 1, 1, 1], "affinity_mode": "running"},
              "image_processor": {"size": {"height": 64, "width": 64}}},
    "data": {"synthetic": {"num_train": 26, "num_validation": 4, "num_test": 8, "image_size": 64, "seed": 1, "label_space": "raf-db"},
             "validation_split": None},
    "training": {"seed": 3, "epochs": 1, "batch_size": 8, "eval_batch_size": 8, "optimizer": {"name": "sgd", "lr": 0.01}},
}


def test_two_processes_print_each_user_facing_line_once(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(TINY_ARM))
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("ACCELERATE_USE_CPU", None)
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", str(REPO / "scripts" / "train.py"), "--recipe", str(recipe), "--dataset", "synthetic",
         "--output", str(tmp_path / "run"), "--quiet"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert json.loads((tmp_path / "run" / "training_results.json").read_text())["num_processes"] == 2
    lines = [line.strip() for line in (result.stdout + "\n" + result.stderr).splitlines() if line.strip()]
    repeated = {line: count for line, count in collections.Counter(lines).items() if count > 1}
    assert not repeated, repeated
    text = result.stdout + result.stderr
    # the decisions, each on one line near the start: 2 processes launched; 3 of 26 train images carved out for validation
    assert sum("launching 2 CPU processes" in line for line in lines) == 1
    (validation,) = [line for line in lines if line.startswith("validation:")]
    assert "3 of the 26 train images held out" in validation
    assert result.stdout.splitlines()[0] == validation
    for expected in ("epoch 1: validation accuracy", "test (best validation model)", "best model (validation accuracy", "reloaded "):
        assert sum(expected in line for line in lines) == 1, expected
    # the sample predictions reload the model with from_pretrained: its "Loading weights" bar is off by default
    assert "Loading weights" not in text and "Writing model shards" not in text


def test_missing_init_from_folder_is_named_not_tried_on_the_hub(tmp_path):
    from hf_fer.training import RecipeError, recipe_from_dict
    from hf_fer.training.loop import _build_model

    missing = tmp_path / "runs" / "typo"
    with pytest.raises(RecipeError, match=f"no such folder: {missing} \\(model.init_from: read as a local path"):
        _build_model(recipe_from_dict({"model": {"init_from": str(missing)}}), None)
