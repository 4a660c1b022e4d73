"""POSTER V2, 8 classes (AffectNet-8, upstream main_8.py): exact conversion against the upstream fixture."""
from __future__ import annotations

from test_poster_v2_parity import check_upstream_parity, recorders_in_main  # noqa: F401 (pytest fixture)


def test_parity_8_classes_affectnet(tmp_path, recorders_in_main, capsys):  # noqa: F811
    """An 8-class checkpoint converted with --dataset affectnet-8 (the only 8-class upstream dataset) gets its names."""
    model = check_upstream_parity("poster_v2_8cls", 8, ("--dataset", "affectnet-8"), tmp_path, capsys)
    names = ["neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt"]
    assert [model.config.id2label[i] for i in range(8)] == names
    assert model.config.label2id == {name: i for i, name in enumerate(names)}
