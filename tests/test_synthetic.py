"""The synthetic faces are a real learning task: labels live in face geometry, not in global statistics."""
import numpy as np
import pytest
import torch
from torch import nn

from hf_fer.data.synthetic import make_synthetic_fer, synthetic_arrays
from hf_fer.labels import get_label_names


def test_dataset_schema_determinism_and_balance():
    dataset = make_synthetic_fer(24, image_size=48, seed=3, label_space="fer2013")
    assert dataset.features["label"].names == get_label_names("fer2013")
    assert dataset.features["image"].__class__.__name__ == "Image"
    image = dataset[0]["image"]
    assert image.size == (48, 48) and image.mode == "RGB"
    counts = np.bincount(dataset["label"], minlength=7)
    assert counts.max() - counts.min() <= 1
    again = make_synthetic_fer(24, image_size=48, seed=3, label_space="fer2013")
    assert again["label"] == dataset["label"]
    assert np.array_equal(np.asarray(again[5]["image"]), np.asarray(dataset[5]["image"]))
    other = make_synthetic_fer(24, image_size=48, seed=4, label_space="fer2013")
    assert not np.array_equal(np.asarray(other[0]["image"]), np.asarray(dataset[0]["image"]))


def test_label_space_sets_order_and_classes():
    eight = make_synthetic_fer(16, image_size=32, seed=0, label_space="affectnet-8")
    assert eight.features["label"].names[-1] == "contempt" and set(eight["label"]) == set(range(8))
    with pytest.raises(KeyError, match="unknown benchmark"):
        make_synthetic_fer(4, label_space="nope")
    with pytest.raises(ValueError, match="image_size"):
        make_synthetic_fer(4, image_size=8)


@pytest.fixture(scope="module")
def faces():
    images, labels, names = synthetic_arrays(3600, image_size=48, seed=0, label_space="affectnet-8")
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0, torch.from_numpy(labels), names


def _global_statistics(images: torch.Tensor) -> torch.Tensor:
    gray = images.mean(1)
    return torch.cat([images.mean((2, 3)), images.std((2, 3)), gray.mean((1, 2))[:, None], gray.std((1, 2))[:, None]], 1)


def test_global_statistics_carry_no_label_information(faces):
    images, labels, names = faces
    features = _global_statistics(images)
    features = (features - features[:3000].mean(0)) / features[:3000].std(0)
    torch.manual_seed(0)
    classifier = nn.Sequential(nn.Linear(features.shape[1], 64), nn.ReLU(), nn.Linear(64, len(names)))
    optimizer = torch.optim.Adam(classifier.parameters(), 1e-2)
    for _ in range(300):
        loss = nn.functional.cross_entropy(classifier(features[:3000]), labels[:3000])
        optimizer.zero_grad(), loss.backward(), optimizer.step()
    accuracy = (classifier(features[3000:]).argmax(1) == labels[3000:]).float().mean().item()
    chance = 1 / len(names)
    assert accuracy < chance + 0.07, f"global statistics predict the label: {accuracy:.3f} (chance {chance:.3f})"


def test_small_cnn_learns_the_expressions(faces):
    images, labels, names = faces
    images = (images - 0.5) / 0.25
    train_x, train_y, test_x, test_y = images[:3000], labels[:3000], images[3000:], labels[3000:]
    torch.manual_seed(0)

    def block(i, o):
        return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU()]

    cnn = nn.Sequential(*block(3, 24), nn.MaxPool2d(2), *block(24, 48), nn.MaxPool2d(2), *block(48, 96), nn.MaxPool2d(2),
                        *block(96, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, len(names)))
    steps = 500
    optimizer = torch.optim.AdamW(cnn.parameters(), 3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=steps)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        index = torch.randint(0, len(train_x), (64,), generator=generator)
        batch = train_x[index]
        flip = torch.rand(len(index), generator=generator) < 0.5
        batch = torch.where(flip[:, None, None, None], batch.flip(3), batch)
        loss = nn.functional.cross_entropy(cnn(batch), train_y[index])
        optimizer.zero_grad(), loss.backward(), optimizer.step(), schedule.step()
    cnn.eval()
    with torch.no_grad():
        predictions = cnn(test_x).argmax(1)
    accuracy = (predictions == test_y).float().mean().item()
    assert accuracy >= 0.90, f"held-out accuracy {accuracy:.3f} after {steps} steps"


def test_faces_do_not_depend_on_the_number_of_rendering_processes(monkeypatch):
    """Each face has its own generator (seed, index): parallel rendering gives the very same dataset."""
    monkeypatch.setenv("HF_FER_SYNTHETIC_WORKERS", "1")
    alone = make_synthetic_fer(20, image_size=40, seed=7, label_space="raf-db")
    monkeypatch.setenv("HF_FER_SYNTHETIC_WORKERS", "3")
    parallel = make_synthetic_fer(20, image_size=40, seed=7, label_space="raf-db")
    assert alone["label"] == parallel["label"]
    for a, b in zip(alone, parallel):
        assert np.array_equal(np.asarray(a["image"]), np.asarray(b["image"]))


def test_a_difficulty_mix_renders_exact_shares_of_each_difficulty():
    """``{"easy": 0.25, "standard": 0.75}``: each face is the face the single-difficulty set has at that index, in exact shares."""
    mix = synthetic_arrays(40, image_size=32, seed=5, difficulty={"easy": 0.25, "standard": 0.75})
    easy = synthetic_arrays(40, image_size=32, seed=5, difficulty="easy")
    standard = synthetic_arrays(40, image_size=32, seed=5, difficulty="standard")
    assert np.array_equal(mix[1], easy[1]) and np.array_equal(mix[1], standard[1])  # labels do not depend on the difficulty
    is_easy = [np.array_equal(m, e) for m, e in zip(mix[0], easy[0])]
    is_standard = [np.array_equal(m, s) for m, s in zip(mix[0], standard[0])]
    assert all(a != b for a, b in zip(is_easy, is_standard))
    assert sum(is_easy) == 10 and sum(is_standard) == 30
    assert not all(is_easy[:10]) and not all(is_standard[-30:])  # spread over the set, not one block
    with pytest.raises(ValueError, match="sum to 1"):
        make_synthetic_fer(4, image_size=32, difficulty={"easy": 0.5})
    with pytest.raises(ValueError, match="difficulty must be one of"):
        make_synthetic_fer(4, image_size=32, difficulty="hard")
