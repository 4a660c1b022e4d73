"""``pipeline("facial-expression-recognition")`` on the six real test photos (22 faces, expected_faces.json).

Expected boxes come from the original RetinaFace ONNX model run with onnxruntime (tests/fixtures/faces/), so
they are independent of the code under test.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

FACES = Path(__file__).parent / "fixtures" / "faces"
PHOTOS = [FACES / f"sample{i}.jpg" for i in range(1, 7)]
EXPECTED = json.loads((FACES / "expected_faces.json").read_text())["images"]


@pytest.fixture(scope="module")
def fer():
    import hf_fer  # noqa: F401  (registers the task)
    from transformers import pipeline

    return pipeline("facial-expression-recognition", device="cpu")  # no model: the shipped default


@pytest.fixture(scope="module")
def batched(fer):
    return fer([str(p) for p in PHOTOS], batch_size=6)


def _boxes(faces):
    return torch.tensor([[f["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")] for f in faces], dtype=torch.float32)


def test_22_faces_with_boxes_landmarks_and_labels(fer, batched):
    from torchvision.ops import box_iou

    assert len(batched) == 6
    names = [fer.model.config.id2label[i] for i in range(fer.model.config.num_labels)]
    for photo, faces in zip(PHOTOS, batched):
        expected = EXPECTED[photo.name]["faces"]
        assert len(faces) == len(expected), photo.name
        iou = box_iou(_boxes(faces), torch.tensor([f["box"] for f in expected], dtype=torch.float32))
        assert (iou.max(dim=1).values >= 0.5).all() and (iou.max(dim=0).values >= 0.5).all(), (photo.name, iou)
        for face in faces:
            assert len(face["landmarks"]) == 5 and all(len(point) == 2 for point in face["landmarks"])
            assert 0.8 <= face["detection_score"] <= 1.0
            scores = [entry["score"] for entry in face["labels"]]
            assert sorted(entry["label"] for entry in face["labels"]) == sorted(names)  # default top_k: all labels
            assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1.0, abs=1e-5)
    assert sum(len(faces) for faces in batched) == 22
    top2 = fer(str(PHOTOS[0]), top_k=2)
    assert [len(face["labels"]) for face in top2] == [2] * 3


def test_batch_of_6_equals_one_by_one(fer, batched):
    one_by_one = [fer(str(photo)) for photo in PHOTOS]
    assert one_by_one == batched
    # Batches of one face per forward: the same faces, scores equal up to float summation order.
    single_batches = fer([str(p) for p in PHOTOS], batch_size=1)
    for faces, reference in zip(single_batches, batched):
        assert [f["box"] for f in faces] == [f["box"] for f in reference]
        for face, ref in zip(faces, reference):
            assert {e["label"]: e["score"] for e in face["labels"]} == pytest.approx({e["label"]: e["score"] for e in ref["labels"]}, abs=1e-5)


def test_exif_rotated_copy_gives_the_same_faces_in_displayed_coordinates(fer, batched, tmp_path):
    original = Image.open(PHOTOS[0])
    stored = original.transpose(Image.Transpose.ROTATE_90)  # pixels stored rotated...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...and the tag says "rotate 90° clockwise to display"
    path = tmp_path / "rotated.png"  # lossless, so the displayed pixels are exactly the original's
    stored.save(path, exif=exif)
    from PIL import ImageOps

    assert ImageOps.exif_transpose(Image.open(path)).tobytes() == original.convert("RGB").tobytes()  # independent check of the file
    faces = fer(str(path))
    reference = batched[0]
    assert len(faces) == len(reference) == 3
    order = sorted(range(3), key=lambda i: faces[i]["box"]["xmin"])
    ref_order = sorted(range(3), key=lambda i: reference[i]["box"]["xmin"])
    for i, j in zip(order, ref_order):
        assert _boxes([faces[i]]) == pytest.approx(_boxes([reference[j]]), abs=2.0)
        assert faces[i]["labels"][0]["label"] == reference[j]["labels"][0]["label"]


def test_bad_inputs_get_an_error_entry_and_the_rest_continue(fer, batched, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    results = fer([str(PHOTOS[0]), str(bad), str(tmp_path / "missing.png"), str(PHOTOS[1])], batch_size=4)
    assert results[0] == batched[0] and results[3] == batched[1]
    assert set(results[1]) == {"input", "error"} and "broken.jpg" in results[1]["error"]
    assert "missing.png" in results[2]["error"]
    from hf_fer.image_io import ImageDecodeError

    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        fer(str(bad))  # a single input raises, naming the file


def test_urls_give_the_faces_of_the_file_and_non_images_say_what_is_expected(fer, batched, http_folder):
    import shutil

    base, folder = http_folder
    shutil.copy(PHOTOS[0], folder / "photo.jpg")
    assert fer(f"{base}/photo.jpg") == batched[0]
    results = fer([f"{base}/photo.jpg", f"{base}/gone.jpg", str(PHOTOS[1])], batch_size=3)
    assert results[0] == batched[0] and results[2] == batched[1]
    assert results[1]["input"] == f"{base}/gone.jpg" and "HTTP 404" in results[1]["error"]
    for item in (None, 5):
        with pytest.raises(TypeError, match="expected a path, URL, bytes, PIL image"):
            fer(item)


def test_malformed_corpus_through_the_pipeline(fer, tmp_path):
    from malformed_corpus import make_malformed_corpus

    corpus = make_malformed_corpus(tmp_path)
    names = sorted(corpus)
    results = fer([str(tmp_path / name) for name in names], batch_size=4)
    assert len(results) == len(names)
    for name, result in zip(names, results):
        expectation = corpus[name]
        if expectation.ok:
            assert isinstance(result, list), (name, result)
        else:
            assert isinstance(result, dict) and name in result["error"], (name, result)
            assert expectation.error in result["error"].lower(), (name, result["error"])


def test_user_boxes_landmarks_detector_and_no_detect(fer, batched):
    expected = EXPECTED[PHOTOS[0].name]["faces"]
    boxes = [f["box"] for f in expected]
    landmarks = [f["landmarks"] for f in expected]
    faces = fer(str(PHOTOS[0]), boxes=boxes, landmarks=landmarks)
    assert [[f["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")] for f in faces] == [[float(v) for v in b] for b in boxes]
    assert all(f["detection_score"] is None for f in faces)
    # The same boxes through a user detector (the FaceDetector protocol) give the same scores.
    from hf_fer.faces import FaceDetections
    from hf_fer.faces.pipeline import FacialExpressionRecognitionPipeline

    class FixedDetector:
        def __init__(self):
            self.calls = []

        def detect(self, images):
            self.calls.append(len(images))
            return [FaceDetections(torch.tensor(boxes, dtype=torch.float32), torch.full((len(boxes),), 0.9),
                                   torch.tensor(landmarks, dtype=torch.float32)) for _ in images]

    detector = FixedDetector()
    custom = FacialExpressionRecognitionPipeline(model=fer.model, image_processor=fer.image_processor, device="cpu", detector=detector)
    with_detector = custom([str(PHOTOS[0]), str(PHOTOS[0])], batch_size=2)
    assert detector.calls == [2]  # one detector call for the chunk
    assert [f["labels"] for f in with_detector[0]] == [f["labels"] for f in faces] == [f["labels"] for f in with_detector[1]]
    # Boxes only (no landmarks) still work.
    assert len(fer(str(PHOTOS[0]), boxes=boxes)) == 3
    # Already-aligned crops: one "face" per image, the whole image.
    crop = Image.open(PHOTOS[0]).crop(tuple(boxes[0]))
    whole = fer(crop, detect=False)
    assert len(whole) == 1 and whole[0]["box"] == {"xmin": 0.0, "ymin": 0.0, "xmax": float(crop.width), "ymax": float(crop.height)}
    assert whole[0]["landmarks"] is None and whole[0]["detection_score"] is None


def test_caller_mistakes_are_named_instead_of_silently_changing_the_call(fer, batched):
    """batch_size=0 used to mean "the default", top_k=0 one label, landmarks without boxes were dropped (faces
    detected instead), and one box where a list of boxes belongs said "'int' object is not iterable"."""
    photo = str(PHOTOS[0])
    for kwargs, message in ((dict(batch_size=0), "batch_size must be a positive integer, got 0"),
                            (dict(batch_size=2.5), "batch_size must be a positive integer, got 2.5"),
                            (dict(top_k=0), "top_k must be a positive integer"),
                            (dict(top_k=-1), "top_k must be a positive integer"),
                            (dict(landmarks=EXPECTED[PHOTOS[0].name]["faces"][0]["landmarks"]), "landmarks= needs boxes=")):
        with pytest.raises(ValueError, match=re.escape(message)):
            fer(photo, **kwargs)
    assert len(fer([photo], batch_size=np.int64(1), top_k=np.int64(2))[0][0]["labels"]) == 2  # numpy integers are fine
    with pytest.raises(ValueError, match=re.escape("boxes must be a list of [xmin, ymin, xmax, ymax]") + ".*got \\[1, 2, 3\\]"):
        fer(photo, boxes=[1, 2, 3])  # one box, not a list of boxes
    (reported,) = fer([photo], boxes=[[1, 2, 3]])  # in a list: that input's error entry
    assert "boxes must be a list of [xmin, ymin, xmax, ymax]" in reported["error"]


def test_numpy_and_datasets_column_inputs(fer, batched):
    import datasets
    import numpy as np

    arrays = [np.asarray(Image.open(photo).convert("RGB")) for photo in PHOTOS[:2]]
    from_arrays = [fer(array) for array in arrays]
    # A JPEG path is decoded at half size with JPEG's DCT scaling (the detector works at 640 px); an array is
    # full size: the same faces, coordinates within a pixel or two, expressions within the resampling difference.
    for faces, reference in zip(from_arrays, batched):
        assert len(faces) == len(reference)
        for face, ref in zip(faces, reference):
            assert _boxes([face]) == pytest.approx(_boxes([ref]), abs=2.0)
            assert face["labels"][0]["label"] == ref["labels"][0]["label"]
            assert {e["label"]: e["score"] for e in face["labels"]} == pytest.approx(
                {e["label"]: e["score"] for e in ref["labels"]}, abs=0.1)
    # A datasets Image column (PIL images, decoded at full size) gives exactly what the same arrays give.
    ds = datasets.Dataset.from_dict({"image": [str(p) for p in PHOTOS[:2]]}).cast_column("image", datasets.Image())
    streamed = list(fer(ds["image"], batch_size=2))
    assert streamed == from_arrays


def test_arm_in_batch_affinity_mode_classifies_each_face_alone(fer):
    """ARM upstream mode mixes the images of a batch; the pipeline must not let one input change another's scores."""
    from test_arm import tiny_config

    from hf_fer.faces.pipeline import FacialExpressionRecognitionPipeline
    from hf_fer.models.arm import ArmForImageClassification, ArmImageProcessor

    torch.manual_seed(0)
    model = ArmForImageClassification(tiny_config(affinity_mode="batch")).eval()
    processor = ArmImageProcessor(size={"height": 64, "width": 64})
    arm = FacialExpressionRecognitionPipeline(model=model, image_processor=processor, device="cpu")
    expected = EXPECTED[PHOTOS[3].name]["faces"]
    boxes = [f["box"] for f in expected]
    together = arm(str(PHOTOS[3]), boxes=boxes)
    alone = [arm(str(PHOTOS[3]), boxes=[box])[0] for box in boxes]
    # Up to float noise of the warp (the sampled region of the photo depends on all its faces: ~1e-5); mixing the
    # batch's affinity maps moves scores by orders of magnitude more.
    for face, reference in zip(together, alone):
        assert face["box"] == reference["box"]
        scores = {e["label"]: e["score"] for e in face["labels"]}
        assert scores == pytest.approx({e["label"]: e["score"] for e in reference["labels"]}, abs=1e-4)


def test_loading_an_hf_fer_folder_never_asks_to_trust_or_runs_its_code(tmp_path):
    """A saved folder with auto_map and a planted marker line in its copied code: the registered classes are used."""
    from test_arm import tiny_config

    from hf_fer.conversion import save_with_remote_code
    from hf_fer.models.arm import ArmForImageClassification, ArmImageProcessor

    folder = tmp_path / "arm"
    save_with_remote_code(ArmForImageClassification(tiny_config()).eval(), ArmImageProcessor(size={"height": 64, "width": 64}), folder)
    marker = tmp_path / "marker"
    code_files = list(folder.glob("*.py"))
    assert code_files and "auto_map" in (folder / "config.json").read_text()
    for file in code_files:
        file.write_text(f"open({str(marker)!r}, 'w').write('ran')\n" + file.read_text())
    script = ("import hf_fer; from transformers import pipeline; "
              f"p = pipeline('facial-expression-recognition', model={str(folder)!r}, device='cpu'); "
              f"print(len(p({str(PHOTOS[0])!r}, boxes=[[411, 351, 594, 595]])))")
    run = subprocess.run([sys.executable, "-c", script], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "1"
    assert "custom code" not in run.stdout + run.stderr and not marker.exists()


def test_jpeg_decoded_at_detector_size_and_again_finer_when_a_crop_needs_it(fer):
    """The detector works at 640 px, so a 1920 px JPEG is decoded at 960 px (DCT scaling); a checkpoint whose crops
    need more pixels than that (256 px crops of ~200 px faces) gets the photo decoded again at full size."""
    from hf_fer.faces.pipeline import FacialExpressionRecognitionPipeline

    small = fer.process_images([str(PHOTOS[4])])[0]
    assert small.scale == (2.0, 2.0) and small.num_faces == 5
    big = FacialExpressionRecognitionPipeline(
        model=fer.model, image_processor=fer.image_processor, device="cpu",
        face_alignment={"method": "box", "margin": 0.0, "square": True, "output_size": [256, 256]})
    finer = big.process_images([str(PHOTOS[4])])[0]
    assert finer.scale == (1.0, 1.0)
    torch.testing.assert_close(finer.boxes, small.boxes)  # the same faces, in displayed pixels either way
    torch.testing.assert_close(finer.landmarks, small.landmarks)


def test_a_panorama_file_is_decoded_at_its_own_working_size(fer, tmp_path):
    """A 12:1 panorama JPEG is decoded finely enough for the detector's elongated working size (not drafted to a
    640 px long side, where its faces would be 8 px high): 60 faces, labelled, as from the decoded image itself."""
    small = np.asarray(Image.open(PHOTOS[4]).convert("RGB").resize((640, 466), Image.BILINEAR))
    panorama = Image.fromarray(np.concatenate([small] * 12, axis=1))
    panorama.save(tmp_path / "panorama.jpg", quality=92)
    from_file = fer(str(tmp_path / "panorama.jpg"))
    from_pixels = fer(np.asarray(Image.open(tmp_path / "panorama.jpg").convert("RGB")))
    assert len(from_file) == len(from_pixels) == 60
    assert all(face["labels"] for face in from_file)
    # the same faces: the file is resampled while decoding (PIL), the array by the detector (torch), so the boxes of
    # these 40 px faces agree to a pixel or two
    from torchvision.ops import box_iou

    iou = box_iou(_boxes(from_file), _boxes(from_pixels))
    best = iou.max(dim=1).values
    assert (best >= 0.8).all() and best.mean() >= 0.95 and len(set(iou.argmax(dim=1).tolist())) == 60


def test_chunks_decoded_ahead_in_a_thread_give_the_same_faces(fer):
    """With more than one torch thread, the next chunk of a list/iterator decodes in a background thread while the
    current one is detected and classified; results are those of one chunk (boxes exact, scores up to the float
    summation order of other classifier batch sizes)."""
    import threading

    paths = [str(p) for p in PHOTOS[:3]]
    threads = []
    original = fer.decode_images

    def spy(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return original(*args, **kwargs)

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    fer.decode_images = spy
    try:
        whole = fer(paths, batch_size=3)
        threads.clear()
        chunked = fer(paths, batch_size=1)
        streamed = list(fer(iter(paths), batch_size=2))
    finally:
        del fer.decode_images
        torch.set_num_threads(previous)
    assert sum(name.startswith("hf_fer-decode") for name in threads) == 2 + 1, threads  # chunks 2-3, then chunk 2
    for results in (chunked, streamed):
        assert len(results) == 3
        for faces, reference in zip(results, whole):
            assert [f["box"] for f in faces] == [f["box"] for f in reference]
            assert [f["landmarks"] for f in faces] == [f["landmarks"] for f in reference]
            for face, ref in zip(faces, reference):
                assert {e["label"]: e["score"] for e in face["labels"]} == pytest.approx(
                    {e["label"]: e["score"] for e in ref["labels"]}, abs=1e-5)


@pytest.mark.parametrize("problem_type, num_labels", [(None, 3), ("multi_label_classification", 3), (None, 1),
                                                      ("regression", 2)])
def test_a_plain_transformers_classifier_scores_like_the_image_classification_pipeline(problem_type, num_labels, tmp_path):
    """Any transformers image classifier works, local folder in, per-face results out; its scores are those of
    transformers' own image-classification pipeline (the independent reference): softmax, sigmoid for multi-label
    and one-logit models, raw values for regression; ``function_to_apply`` overrides like there."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor, pipeline

    import hf_fer  # noqa: F401  (registers the task)

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, num_labels=num_labels, problem_type=problem_type,
                       id2label={i: f"class{i}" for i in range(num_labels)}, label2id={f"class{i}": i for i in range(num_labels)})
    folder = tmp_path / "vit"
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    fer = pipeline("facial-expression-recognition", model=str(folder))
    reference = pipeline("image-classification", model=str(folder))
    faces = fer(str(PHOTOS[0]))
    assert len(faces) == 3 and {entry["label"] for entry in faces[0]["labels"]} == set(config.id2label.values())
    crop = Image.open(PHOTOS[0]).convert("RGB").crop((100, 50, 260, 230))
    for function in (None, "none", "sigmoid"):
        kwargs = {} if function is None else {"function_to_apply": function}
        (face,) = fer(crop, detect=False, **kwargs)
        expected = reference(crop, top_k=num_labels, **kwargs)
        assert [entry["label"] for entry in face["labels"]] == [entry["label"] for entry in expected]
        assert [entry["score"] for entry in face["labels"]] == pytest.approx([entry["score"] for entry in expected], abs=1e-5)
    with pytest.raises(ValueError, match="function_to_apply must be"):
        fer(crop, detect=False, function_to_apply="relu")


def test_detection_size_is_checked_and_set_at_creation(fer):
    from transformers import pipeline

    from hf_fer.faces import RetinaFaceDetector

    assert fer.detector.max_size == 640  # the default
    assert pipeline("facial-expression-recognition", detection_size="full").detector.max_size is None
    assert pipeline("facial-expression-recognition", detection_size=1280).detector.max_size == 1280
    for bad in (16, "big", True, 640.0):
        with pytest.raises(ValueError, match="detection_size must be an int >= 32"):
            pipeline("facial-expression-recognition", detection_size=bad)
    with pytest.raises(ValueError, match="give it to your own detector"):
        pipeline("facial-expression-recognition", detection_size=1280, detector=RetinaFaceDetector.from_pretrained())
    with pytest.raises(TypeError, match="set when the pipeline is created"):
        fer(str(PHOTOS[0]), detection_size=1280)
