"""Label spaces: orders checked against the benchmarks' own documentation (shared/specs), mappings by hand."""
import numpy as np
import pytest
import torch

from hf_fer import labels


# Native orders as each dataset's files number them (shared/specs/{arm,poster_v2,vt_nr}.md, ecosystem.md §7).
EXPECTED = {
    "raf-db": ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"],
    "affectnet-7": ["neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger"],
    "affectnet-8": ["neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt"],
    "fer2013": ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"],
    "ferplus": ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"],
    "sfew": ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"],
    "caer-s": ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"],
}


@pytest.mark.parametrize("benchmark", sorted(EXPECTED))
def test_orders(benchmark):
    assert labels.get_label_names(benchmark) == EXPECTED[benchmark]
    assert labels.id2label(benchmark) == dict(enumerate(EXPECTED[benchmark]))
    assert labels.label2id(benchmark) == {n: i for i, n in enumerate(EXPECTED[benchmark])}
    assert set(EXPECTED[benchmark]) <= set(labels.CANONICAL_NAMES)


def test_unknown_benchmark_and_aliases():
    with pytest.raises(KeyError, match="unknown benchmark 'ckplus'.*raf-db"):
        labels.get_label_names("ckplus")
    assert labels.get_label_names("RAF-DB") == EXPECTED["raf-db"]
    assert labels.get_label_names("affectnet8") == EXPECTED["affectnet-8"]


@pytest.mark.parametrize("raw,name", [("Angry", "anger"), ("HAPPY", "happiness"), ("SU", "surprise"), ("sad", "sadness"), ("Contempt", "contempt"), ("Neutral", "neutral")])
def test_canonical_names(raw, name):
    assert labels.canonical_name(raw) == name


def test_canonical_name_rejects_unknown():
    with pytest.raises(KeyError, match="unknown expression name 'boredom'"):
        labels.canonical_name("boredom")


def test_label_mapping_raf_to_fer2013_by_hand():
    mapping = labels.label_mapping("raf-db", "fer2013")
    # RAF surprise(0)->FER 5, fear(1)->2, disgust(2)->1, happiness(3)->3, sadness(4)->4, anger(5)->0, neutral(6)->6
    assert mapping.source_to_target == (5, 2, 1, 3, 4, 0, 6)
    assert mapping.map_labels([0, 1, 2, 3, 4, 5, 6]) == [5, 2, 1, 3, 4, 0, 6]
    assert mapping.map_labels(5) == 0
    np.testing.assert_array_equal(mapping.map_labels(np.array([6, 0])), np.array([6, 5]))
    assert mapping.missing_in_target == [] and mapping.missing_in_source == []


def test_logits_remapping_by_hand():
    mapping = labels.label_mapping("raf-db", "fer2013")
    raf_logits = torch.tensor([[10.0, 11, 12, 13, 14, 15, 16]])  # value = 10 + RAF index
    # FER order: anger(RAF 5), disgust(2), fear(1), happiness(3), sadness(4), surprise(0), neutral(6)
    assert mapping.map_logits(raf_logits).tolist() == [[15, 12, 11, 13, 14, 10, 16]]


def test_missing_classes_are_reported_not_guessed():
    to_seven = labels.label_mapping("affectnet-8", "raf-db")
    assert to_seven.missing_in_target == ["contempt"]
    with pytest.raises(ValueError, match="contempt"):
        to_seven.map_labels([7])
    assert to_seven.map_labels([7, 0], unmapped="-1") == [-1, 6]
    to_eight = labels.label_mapping("raf-db", "affectnet-8")
    assert to_eight.missing_in_source == ["contempt"]
    mapped = to_eight.map_logits(torch.zeros(1, 7))
    assert mapped.shape == (1, 8) and mapped[0, 7] == float("-inf")
    assert torch.softmax(mapped, -1)[0, 7] == 0
    assert "contempt" in to_eight.describe()


def test_mapping_accepts_id2label_and_raw_names():
    mapping = labels.label_mapping({0: "Happy", 1: "Sad"}, ["sad", "happy", "angry"])
    assert mapping.source_to_target == (1, 0)
    assert mapping.missing_in_source == ["anger"]
    assert labels.benchmark_of(["Surprise", "Fear", "Disgust", "Happy", "Sad", "Angry", "Neutral"]) == "raf-db"


def test_out_of_range_labels():
    with pytest.raises(ValueError, match="0..6"):
        labels.label_mapping("raf-db", "fer2013").map_labels([7])
