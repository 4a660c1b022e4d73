"""Alignment: the Umeyama similarity against a hand-made transform and scikit-image, the batched warp against
scikit-image / torchvision, and the ``face_alignment`` setting surviving save/load for every architecture."""
import json
import math

import numpy as np
import pytest
import torch
from skimage.transform import SimilarityTransform, warp
from torchvision.transforms.functional import resized_crop

from hf_fer.faces import (
    ARCFACE_112_TEMPLATE,
    align_faces,
    get_face_alignment,
    similarity_transform,
    validate_face_alignment,
)


def make_similarity(angle: float, scale: float, tx: float, ty: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[scale * c, -scale * s, tx], [scale * s, scale * c, ty]], dtype=torch.float64)


def apply(m: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    return points @ m[:, :2].T + m[:, 2]


def test_recovers_a_known_similarity_exactly():
    rng = torch.Generator().manual_seed(0)
    truths = [make_similarity(0.3, 1.7, 12.5, -4.0), make_similarity(-2.5, 0.4, -100.0, 33.0),
              make_similarity(math.pi, 1.0, 0.0, 0.0)]
    src = torch.rand(len(truths), 5, 2, generator=rng, dtype=torch.float64) * 200
    dst = torch.stack([apply(m, p) for m, p in zip(truths, src)])
    found = similarity_transform(src, dst)
    assert found.shape == (3, 2, 3) and found.dtype == torch.float64
    torch.testing.assert_close(found, torch.stack(truths), atol=1e-9, rtol=0)
    # One template for all faces ([K, 2]) and float32 input
    one = similarity_transform(src.float(), dst[0].float())
    assert one.dtype == torch.float32 and one.shape == (3, 2, 3)
    torch.testing.assert_close(one[0].double(), truths[0], atol=1e-3, rtol=0)


def test_matches_scikit_image_least_squares():
    rng = np.random.default_rng(1)
    template = np.array(ARCFACE_112_TEMPLATE)
    src = rng.uniform(0, 500, size=(4, 5, 2))
    src[1] = src[1, :, ::-1]  # a mirrored layout: the best proper similarity, not a reflection
    ours = similarity_transform(torch.from_numpy(src), torch.from_numpy(template)).numpy()
    for i in range(len(src)):
        if hasattr(SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
            reference = SimilarityTransform.from_estimate(src[i], template)
        else:
            reference = SimilarityTransform()
            assert reference.estimate(src[i], template)
        np.testing.assert_allclose(ours[i], reference.params[:2], atol=1e-8)
        assert np.linalg.det(ours[i][:, :2]) > 0


def test_similarity_warp_matches_scikit_image():
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:120, 0:160]
    image = np.stack([(xx * 1.5) % 256, (yy * 2.0) % 256, (xx + yy) % 256]).astype(np.uint8)  # smooth ramps
    image[:, 40:80, 60:100] = rng.integers(0, 256, size=(3, 40, 40))  # and texture
    # landmarks = the template moved into the image by known similarities (image <- crop); the second face hangs
    # over the image's edge (zeros there) and both are warped in one call
    crop_to_image = [make_similarity(0.35, 1.3, 40.0, 10.0), make_similarity(-0.8, 0.6, 110.0, 70.0)]
    template = torch.tensor(ARCFACE_112_TEMPLATE, dtype=torch.float64)
    landmarks = torch.stack([apply(m, template) for m in crop_to_image])
    alignment = {"method": "similarity_5pt", "template": template.tolist(), "output_size": [112, 112]}
    ours = align_faces(torch.from_numpy(image), boxes=None, landmarks=landmarks, alignment=alignment)
    assert ours.shape == (2, 3, 112, 112) and ours.dtype == torch.uint8
    for face, m in enumerate(crop_to_image):
        inverse = SimilarityTransform(matrix=np.vstack([m.numpy(), [0, 0, 1]]))
        for c in range(3):
            expected = warp(image[c].astype(np.float64), inverse, output_shape=(112, 112), order=1, mode="constant",
                            cval=0, preserve_range=True)
            diff = np.abs(ours[face, c].numpy().astype(np.float64) - expected)
            assert diff[2:-2, 2:-2].max() <= 2.0, f"face {face} channel {c}: max diff {diff[2:-2, 2:-2].max()}"
    assert ours[1, :, -10:, -10:].max() == 0  # beyond the image


def test_small_faces_far_apart_warp_like_scikit_image():
    """Faces far apart in a large image are sampled from one window each (not one region around all of them): the
    crops match scikit-image's warp, and each equals the face warped alone, the one hanging over the edge included."""
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:300, 0:900]
    image = np.stack([(xx * 0.7) % 256, (yy * 1.1) % 256, (xx + 2 * yy) % 256]).astype(np.uint8)
    image[:, 20:70, 20:70] = rng.integers(0, 256, size=(3, 50, 50))
    crop_to_image = [make_similarity(0.2, 0.4, 20.0, 15.0), make_similarity(-0.3, 0.5, 840.0, 250.0),
                     make_similarity(0.1, 0.45, 450.0, 120.0)]
    template = torch.tensor(ARCFACE_112_TEMPLATE, dtype=torch.float64)
    landmarks = torch.stack([apply(m, template) for m in crop_to_image])
    alignment = {"method": "similarity_5pt", "template": template.tolist(), "output_size": [112, 112]}
    together = align_faces(torch.from_numpy(image), boxes=None, landmarks=landmarks, alignment=alignment)
    for face, m in enumerate(crop_to_image):
        alone = align_faces(torch.from_numpy(image), boxes=None, landmarks=landmarks[face:face + 1], alignment=alignment)
        assert (together[face].int() - alone[0].int()).abs().max() <= 1
        inverse = SimilarityTransform(matrix=np.vstack([m.numpy(), [0, 0, 1]]))
        for c in range(3):
            expected = warp(image[c].astype(np.float64), inverse, output_shape=(112, 112), order=1, mode="constant",
                            cval=0, preserve_range=True)
            diff = np.abs(together[face, c].numpy().astype(np.float64) - expected)
            assert diff[2:-2, 2:-2].max() <= 2.0, f"face {face} channel {c}: max diff {diff[2:-2, 2:-2].max()}"
    assert together[1, :, -10:, -10:].max() == 0  # beyond the image


def test_box_crops_match_torchvision_resized_crop():
    rng = np.random.default_rng(3)
    image = torch.from_numpy(rng.integers(0, 256, size=(3, 90, 130), dtype=np.uint8))
    image = torch.nn.functional.avg_pool2d(image[None].float(), 3, 1, 1)[0].round().to(torch.uint8)  # smoother
    boxes = torch.tensor([[10.0, 20.0, 50.0, 70.0], [60.0, 5.0, 120.0, 65.0]])
    alignment = {"method": "box", "margin": 0.0, "square": False, "output_size": [48, 48]}
    crops = align_faces(image, boxes=boxes, landmarks=None, alignment=alignment)
    assert crops.shape == (2, 3, 48, 48)
    for crop, (x0, y0, x1, y1) in zip(crops, boxes.int().tolist()):
        expected = resized_crop(image, y0, x0, y1 - y0, x1 - x0, [48, 48], antialias=False)
        # borders differ on purpose: torchvision clamps at the crop's edge, we read the real neighbouring pixels
        diff = (crop.int() - expected.int()).abs()[:, 1:-1, 1:-1]
        assert diff.max() <= 2, diff.max()
    # margins and square: the crop of a 40x50 box with 25% margins is the 60x75 region -> square 75x75
    wide = align_faces(image, boxes=boxes[:1], landmarks=None,
                       alignment={"method": "box", "margin": 0.25, "square": True, "output_size": None})
    assert wide.shape == (1, 3, 75, 75)
    # outside the image is black
    assert wide[0, :, :, :3].max() == 0


def test_none_and_errors():
    image = torch.zeros(3, 10, 12, dtype=torch.uint8)
    assert align_faces(image, boxes=None, landmarks=None, alignment={"method": "none"}).shape == (1, 3, 10, 12)
    empty = align_faces(image, boxes=torch.zeros(0, 4), landmarks=torch.zeros(0, 5, 2),
                        alignment={"method": "box", "margin": 0.1, "output_size": [8, 8]})
    assert empty.shape == (0, 3, 8, 8)
    with pytest.raises(ValueError, match="face_alignment.method"):
        validate_face_alignment({"method": "affine"})
    with pytest.raises(ValueError, match=r"face_alignment.template: expected shape \[5, 2\]"):
        validate_face_alignment({"method": "similarity_5pt", "template": [[0, 0]] * 4, "output_size": [10, 10]})
    with pytest.raises(ValueError, match="output_size"):
        validate_face_alignment({"method": "box", "output_size": [0, 10]})


ARCHITECTURES = ["arm", "dacl", "dmue", "poster_v2", "vt_nr"]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_face_alignment_survives_save_and_load(arch, tmp_path):
    import hf_fer  # noqa: F401  registers the architectures
    from transformers import AutoImageProcessor

    from hf_fer.models import ARCHITECTURES as REGISTRY

    processor = REGISTRY[arch].image_processor_class()
    default = get_face_alignment(processor)
    assert default["source"], f"{arch}: the default alignment names its source"
    processor.save_pretrained(tmp_path / "default")
    saved = json.loads((tmp_path / "default" / "preprocessor_config.json").read_text())
    assert saved["face_alignment"] == processor.face_alignment
    assert AutoImageProcessor.from_pretrained(tmp_path / "default").face_alignment == processor.face_alignment

    custom = {"method": "box", "margin": [0.1, 0.2, 0.1, 0.0], "square": True, "output_size": [64, 64],
              "source": "test"}
    processor.face_alignment = custom
    processor.save_pretrained(tmp_path / "custom")
    loaded = AutoImageProcessor.from_pretrained(tmp_path / "custom")
    assert type(loaded) is type(processor)
    assert get_face_alignment(loaded) == validate_face_alignment(custom)
    loaded.face_alignment = dict(custom, output_size=None)  # null = the processor's input size
    size = loaded.crop_size if getattr(loaded, "do_center_crop", False) else loaded.size
    assert get_face_alignment(loaded)["output_size"] == [size["width"], size["height"]]
    # and the processor still processes images
    out = loaded(images=torch.zeros(3, 40, 40, dtype=torch.uint8), return_tensors="pt")
    assert out["pixel_values"].ndim == 4


def test_default_for_processors_without_face_alignment():
    from transformers import ViTImageProcessor

    alignment = get_face_alignment(ViTImageProcessor(size={"height": 224, "width": 224}))
    assert alignment["method"] == "box" and alignment["output_size"] == [224, 224]
    assert get_face_alignment(None)["method"] == "box"


CONFIG_DATASETS = {"rafdb": "raf-db", "affectnet7": "affectnet-7", "affectnet8": "affectnet-8",
                   "affectnet8_multibranch": "affectnet-8", "caer_s": "caer-s", "ferplus": "ferplus",
                   "synthetic": "synthetic", "fer2013": "fer2013"}


def test_every_modeling_config_carries_its_training_alignment():
    from pathlib import Path

    from hf_fer.faces import training_alignment
    from hf_fer.models import ARCHITECTURES as REGISTRY

    root = Path(__file__).resolve().parents[1] / "modeling_configs"
    files = sorted(root.glob("*/*.json"))
    assert len(files) >= 10
    for file in files:
        alignment = json.loads(file.read_text()).get("face_alignment")
        assert alignment is not None, f"{file}: no face_alignment"
        validate_face_alignment(alignment, name=str(file))
        assert alignment["source"], f"{file}: face_alignment without a source"
        assert alignment == training_alignment(file.parent.name, CONFIG_DATASETS.get(file.stem, file.stem)), file
    # each architecture's processor default is the alignment of its main training set
    for arch, dataset in {"arm": "raf-db", "dacl": "raf-db", "poster_v2": "raf-db", "dmue": "affectnet-8",
                          "vt_nr": "ferplus", "mini_xception": "fer2013"}.items():
        assert REGISTRY[arch].image_processor_class().face_alignment == training_alignment(arch, dataset), arch


@pytest.mark.parametrize("dataset, method", [("raf-db", "similarity_5pt"), ("affectnet-7", "box")])
def test_converted_folder_carries_the_datasets_alignment(dataset, method, tmp_path):
    """``convert_original_checkpoint --dataset D`` writes D's face crop into preprocessor_config.json."""
    import harness
    from transformers import AutoImageProcessor

    from hf_fer.faces import training_alignment

    checkpoint = tmp_path / "arm.pth"
    torch.save({"state_dict": harness.load_fixture_state_dict("arm")}, checkpoint)
    out = harness.convert_with_cli("arm", checkpoint, tmp_path / "out", ["--dataset", dataset])
    saved = json.loads((out / "preprocessor_config.json").read_text())["face_alignment"]
    assert saved["method"] == method and saved == training_alignment("arm", dataset)
    resolved = get_face_alignment(AutoImageProcessor.from_pretrained(out))
    assert resolved == dict(saved, output_size=saved["output_size"] or [224, 224])  # null -> ARM's 224x224 input


@pytest.mark.parametrize("recipe, dataset, expected", [
    ("rafdb.yaml", "data/rafdb", "raf-db"),  # from the config file (modeling_configs/arm/rafdb.json)
    ("affectnet7.yaml", "data/affectnet", "affectnet-7"),  # no config file: from the label space
    ("rafdb.yaml", "synthetic", "synthetic"),  # what the model is actually trained on wins
])
def test_training_gives_the_processor_its_datas_alignment(recipe, dataset, expected):
    from pathlib import Path

    from hf_fer.faces import training_alignment
    from hf_fer.labels import id2label
    from hf_fer.training import load_recipe
    from hf_fer.training.loop import _build_model

    loaded = load_recipe(Path(__file__).resolve().parents[1] / "modeling_configs" / "arm" / recipe)
    model, processor = _build_model(loaded, id2label(loaded.model.label_space), dataset)
    assert processor.face_alignment == training_alignment("arm", expected)
    assert not hasattr(model.config, "face_alignment")  # it belongs to the processor
