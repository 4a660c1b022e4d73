"""Fine-tuning (``model.init_from``) from a model whose class order differs from the dataset's: rows are
reordered by class name (and it is said), never silently relabelled."""
import numpy as np
import pytest
import torch

from hf_fer.labels import get_label_names, id2label
from hf_fer.training import RecipeError, recipe_from_dict
from hf_fer.training.loop import _build_model

CONFIG = {"image_size": 64, "backbone_depths": [1, 1, 1, 1], "de_albino_kernel_size": 8, "de_albino_stride": 4, "affinity_mode": "running"}


@pytest.fixture(scope="module")
def faces():
    """140 synthetic faces in RAF-DB order: 70 to fit the classifier, 70 to measure accuracy."""
    from hf_fer.data.synthetic import make_synthetic_fer

    data = make_synthetic_fer(140, image_size=64, seed=5, label_space="raf-db", difficulty="easy")
    names = [data.features["label"].names[label] for label in data["label"]]
    images = list(data["image"])
    return (images[::2], names[::2]), (images[1::2], names[1::2])


@pytest.fixture(scope="module")
def rafdb_model(tmp_path_factory, faces):
    """A small ARM in RAF-DB order whose classifier is fitted (ridge regression on its features) to half the faces."""
    from hf_fer.conversion import save_with_remote_code
    from hf_fer.models.arm import ArmConfig, ArmForImageClassification, ArmImageProcessor

    torch.manual_seed(0)
    model = ArmForImageClassification(ArmConfig(**CONFIG, id2label=id2label("raf-db"), label2id={v: k for k, v in id2label("raf-db").items()})).eval()
    processor = ArmImageProcessor(size={"height": 64, "width": 64})
    (images, names), _ = faces
    features = []
    hook = model.classifier.register_forward_hook(lambda module, inputs, output: features.append(inputs[0]))
    _logits(model, processor, images)
    hook.remove()
    x = torch.cat([features[0], torch.ones(len(images), 1)], 1).double()
    targets = torch.nn.functional.one_hot(torch.tensor([get_label_names("raf-db").index(n) for n in names]), 7).double()
    solution = torch.linalg.solve(x.T @ x + 1e-2 * torch.eye(x.shape[1], dtype=torch.double), x.T @ targets)
    with torch.no_grad():
        model.classifier.weight.copy_(solution[:-1].T.float())
        model.classifier.bias.copy_(solution[-1].float())
    folder = tmp_path_factory.mktemp("rafdb_model")
    save_with_remote_code(model, processor, folder)
    return folder


def _fine_tune_start(folder, space):
    recipe = recipe_from_dict({"model": {"init_from": str(folder)}})
    printed = []
    model, processor = _build_model(recipe, id2label(space), announce=printed.append)
    return model.eval(), processor, printed


def _logits(model, processor, images):
    with torch.no_grad():
        return model(pixel_values=processor(images, return_tensors="pt")["pixel_values"]).logits


def test_other_class_order_is_reordered_by_name_with_the_same_predictions(rafdb_model, faces):
    (fitted, fitted_truth), (held_out, held_out_truth) = faces
    images, truth = fitted + held_out, fitted_truth + held_out_truth
    original, processor, printed = _fine_tune_start(rafdb_model, "raf-db")
    assert printed == []
    reordered, _, printed = _fine_tune_start(rafdb_model, "fer2013")
    assert len(printed) == 1 and "classifier rows reordered by class name" in printed[0] and "fer2013" not in printed[0], printed
    fer = get_label_names("fer2013")
    assert [reordered.config.id2label[i] for i in range(7)] == fer and reordered.config.label2id["anger"] == 0
    before, after = _logits(original, processor, images), _logits(reordered, processor, images)
    raf = get_label_names("raf-db")
    torch.testing.assert_close(after, before[:, [raf.index(name) for name in fer]], rtol=0, atol=1e-5)  # BLAS row order
    predicted_before = [raf[i] for i in before.argmax(-1)]
    predicted_after = [fer[i] for i in after.argmax(-1)]
    assert predicted_after == predicted_before and len(set(predicted_before)) >= 3
    accuracy = lambda predicted: float(np.mean([p == t for p, t in zip(predicted, truth)]))  # noqa: E731
    assert accuracy(predicted_after) == accuracy(predicted_before) > 0.5  # chance: 1/7
    # what the loop used to do (rename the classes, keep the rows) predicts other classes: the test can fail
    from transformers import AutoModelForImageClassification

    relabelled = AutoModelForImageClassification.from_pretrained(rafdb_model, id2label=id2label("fer2013"), label2id={v: k for k, v in id2label("fer2013").items()}).eval()
    assert accuracy([fer[i] for i in _logits(relabelled, processor, images).argmax(-1)]) < accuracy(predicted_before) - 0.2


def test_same_count_other_names_is_refused_and_other_count_gets_a_new_head(rafdb_model):
    with pytest.raises(RecipeError, match=r"has the classes \['surprise'.*but the dataset has \['a', 'b'.*cannot be matched"):
        _build_model(recipe_from_dict({"model": {"init_from": str(rafdb_model)}}), dict(enumerate("abcdefg")), announce=print)
    model, _, printed = _fine_tune_start(rafdb_model, "affectnet-8")
    assert model.config.num_labels == 8 and "the classifier is newly initialised" in printed[0]
