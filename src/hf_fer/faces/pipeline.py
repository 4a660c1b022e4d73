"""``pipeline("facial-expression-recognition")``: faces found, aligned the way the checkpoint was trained, classified.

Registered with transformers' ``PIPELINE_REGISTRY`` by ``import hf_fer``. The work is done per *chunk* of
``batch_size`` images rather than per image, so that the detector sees several photos at once and the faces of
all of them go through the image processor and the classifier together:

    decode (hf_fer.image_io.load_image, EXIF applied; JPEGs at the detector's size; the built-in detector's resize
    done right there)  ->  detect (one detector call per chunk)
    -> align (one batched warp per image, the processor's ``face_alignment``)
    -> preprocess + classify (all faces of the chunk, ``batch_size`` faces per forward)

Nothing in that path loops over faces in Python; only the final dicts are built per face. Decoding (with the
detector's resize) runs in threads, and for lists/iterators of several chunks the next chunk decodes while the
current one is detected and classified (one chunk ahead, so memory stays bounded).
"""
from __future__ import annotations

import io
import itertools
import logging
import math
import numbers
import os
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForImageClassification, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

logger = logging.getLogger(__name__)

__all__ = ["TASK", "FacialExpressionRecognitionPipeline", "FaceResult", "register_pipeline", "DEFAULT_BATCH_SIZE"]

TASK = "facial-expression-recognition"
DEFAULT_BATCH_SIZE = 8
#: The built-in detector's working long side (``RetinaFaceDetector.max_size``; ``detection_size=``).
DEFAULT_DETECTION_SIZE = 640
#: Photos larger than this (long side, pixels) are reduced while decoding: the detector works at 640 px and face crops
#: at the classifier's size, so more only costs memory (6 x 12000² photos would otherwise hold GBs). Coordinates are
#: still reported in the pixels of the full-size displayed image.
DEFAULT_MAX_IMAGE_SIZE = 4096
#: Used when the processor wants a 5-point alignment but only boxes are known (user boxes without landmarks).
BOX_FALLBACK_ALIGNMENT = {"method": "box", "margin": 0.0, "square": True, "output_size": None,
                          "source": "hf_fer fallback: boxes without landmarks"}


@dataclass
class FaceResult:
    """Raw result of one image: tensors kept whole so callers (video tracking, smoothing) can work on them."""

    name: str
    size: tuple[int, int]  # (width, height) of the displayed image
    boxes: torch.Tensor | None = None  # [N, 4] float32, CPU
    landmarks: torch.Tensor | None = None  # [N, 5, 2] float32, CPU, or None
    detection_scores: torch.Tensor | None = None  # [N] float32, CPU, or None (user boxes / no detection)
    probabilities: torch.Tensor | None = None  # [N, num_labels] float32, CPU
    error: str | None = None
    exception: BaseException | None = None  # what caused ``error`` (re-raised for a single input)
    image: Any = None  # the decoded PIL image, only when asked (annotation)
    scale: tuple[float, float] = (1.0, 1.0)  # displayed pixels per decoded pixel (x, y); > 1 when downscaled at decode
    fetched: bytes | None = field(default=None, repr=False)  # a URL input's bytes (a finer re-decode reuses them)

    @property
    def num_faces(self) -> int:
        return 0 if self.boxes is None else int(self.boxes.shape[0])


@dataclass
class _Timings:
    decode: float = 0.0
    detection: float = 0.0
    alignment: float = 0.0
    preprocess: float = 0.0
    classification: float = 0.0
    images: int = 0
    faces: int = 0

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def _input_name(item: Any, index: int) -> str:
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    if isinstance(item, dict) and item.get("path"):
        return str(item["path"])
    return f"<input {index}>"


def _default_classification_function(config) -> str:
    """The scores transformers' image-classification pipeline would give for this config (same rule, same order)."""
    problem_type, num_labels = getattr(config, "problem_type", None), getattr(config, "num_labels", 2)
    if problem_type == "regression":
        return "none"
    if problem_type == "multi_label_classification" or num_labels == 1:
        return "sigmoid"
    if problem_type == "single_label_classification" or num_labels > 1:
        return "softmax"
    return _classification_function(getattr(config, "function_to_apply", None) or "none")


def _classification_function(value: Any) -> str:
    name = str(getattr(value, "value", value)).lower()  # a string or transformers' ClassificationFunction
    if name not in ("softmax", "sigmoid", "none"):
        raise ValueError(f"function_to_apply must be 'softmax', 'sigmoid' or 'none', got {value!r}")
    return name


def _apply_classification_function(logits: torch.Tensor, function: str) -> torch.Tensor:
    if function == "softmax":
        return logits.softmax(dim=-1)
    if function == "sigmoid":
        return logits.sigmoid()
    return logits


def _is_positive_integer(value: Any) -> bool:
    """An int >= 1 (numpy integers too; not a bool, a float or a string)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def _as_box_tensor(boxes: Any) -> torch.Tensor:
    """User boxes: tensor/array [N, 4], list of [x1, y1, x2, y2], or list of {"xmin", "ymin", "xmax", "ymax"} dicts."""
    if isinstance(boxes, torch.Tensor):
        tensor = boxes.detach().to("cpu", torch.float32)
    else:
        try:
            rows = [[b["xmin"], b["ymin"], b["xmax"], b["ymax"]] if isinstance(b, dict) else list(b) for b in boxes]
            tensor = torch.tensor(rows, dtype=torch.float32) if rows else torch.zeros(0, 4)
        except (TypeError, ValueError, KeyError) as error:  # e.g. one box [x1, y1, x2, y2] where a list of boxes belongs
            shown = repr(boxes) if len(repr(boxes)) <= 120 else repr(boxes)[:117] + "..."
            raise ValueError(f"boxes must be a list of [xmin, ymin, xmax, ymax] (or of dicts with those keys) per "
                             f"image, got {shown} ({type(error).__name__}: {error})") from None
    tensor = tensor.reshape(-1, 4) if tensor.numel() == 0 else tensor
    if tensor.ndim != 2 or tensor.shape[1] != 4:
        raise ValueError(f"boxes must be [N, 4] (xmin, ymin, xmax, ymax), got shape {tuple(tensor.shape)}")
    if bool((tensor[:, 2] <= tensor[:, 0]).any() or (tensor[:, 3] <= tensor[:, 1]).any()):
        raise ValueError(f"boxes must satisfy xmax > xmin and ymax > ymin, got {tensor.tolist()}")
    return tensor


def _as_landmark_tensor(landmarks: Any, num_faces: int) -> torch.Tensor | None:
    if landmarks is None:
        return None
    tensor = torch.as_tensor(np.asarray(landmarks, dtype=np.float32)) if not isinstance(landmarks, torch.Tensor) \
        else landmarks.detach().to("cpu", torch.float32)
    if tensor.numel() == 0 and num_faces == 0:
        return tensor.reshape(0, 5, 2)
    if tuple(tensor.shape) != (num_faces, 5, 2):
        raise ValueError(f"landmarks must be [N, 5, 2] (ArcFace order) with N = {num_faces} boxes, got shape {tuple(tensor.shape)}")
    return tensor


def _displayed_size(item: Any) -> tuple[int, int] | None:
    """(width, height) of an encoded image as displayed (EXIF orientation applied), from its header only."""
    from PIL import Image

    if isinstance(item, dict):
        item = item.get("bytes") or item.get("path")
    if not isinstance(item, (str, os.PathLike, bytes)):
        return None
    try:
        with Image.open(io.BytesIO(item) if isinstance(item, bytes) else item) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 — load_image reports the problem with its own message
        return None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _image_to_tensor(image) -> torch.Tensor:
    """PIL RGB → uint8 [3, H, W], without copying the pixels where possible.

    PIL keeps an RGB image as 4 bytes per pixel (RGBX). Its Arrow export (Pillow >= 11.2; pyarrow comes with
    ``datasets``) hands out that buffer as is, so the tensor is a view of PIL's memory ([3, H, W] with pixel stride
    4, which the detector's resize uses as a 4-channel image, its fastest path); the view keeps the buffer alive.
    Images PIL stores in several blocks (very large ones) or other modes fall back to numpy's copy. Nothing in the
    pipeline writes into the decoded pixels."""
    width, height = image.size
    if image.mode == "RGB" and hasattr(image, "__arrow_c_array__") and width * height > 0:
        try:
            import pyarrow

            array = pyarrow.array(image)
            data = array.buffers()[-1]
            if array.offset == 0 and data is not None and data.size >= 4 * width * height:
                pixels = np.frombuffer(data, dtype=np.uint8, count=4 * width * height)
                with warnings.catch_warnings():  # read-only numpy view: the pipeline only reads it
                    warnings.simplefilter("ignore", UserWarning)
                    rgbx = torch.from_numpy(pixels)
                return rgbx.view(height, width, 4).permute(2, 0, 1)[:3]
        except Exception:  # noqa: BLE001 — an optimisation only (no pyarrow, multi-block image, ...)
            pass
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)


def _round_list(values: torch.Tensor, digits: int) -> list:
    """Rounded to ``digits`` decimals as Python floats (rounded in float64: a float32 605.81 would print as
    605.8099975585938)."""
    return torch.round(values.double(), decimals=digits).tolist()


class FacialExpressionRecognitionPipeline(Pipeline):
    """Faces in photos → expressions: detect, align per the checkpoint's ``face_alignment``, classify.

    Example::

        import hf_fer
        from transformers import pipeline

        fer = pipeline("facial-expression-recognition")          # the shipped default model, offline
        fer("group.jpg")
        # [{"box": {"xmin": 411.2, "ymin": 351.0, "xmax": 594.3, "ymax": 595.1},
        #   "landmarks": [[442.0, 459.1], ...], "detection_score": 0.9994,
        #   "labels": [{"label": "happiness", "score": 0.91}, ...]}, ...]

    Constructor options (``pipeline(TASK, model=..., detector=..., ...)``):
        detector: any object with ``detect(images: list[uint8 [3, H, W]]) -> list[FaceDetections]`` (the
            ``hf_fer.faces.FaceDetector`` protocol). Default: the shipped RetinaFace, loaded on first use.
        face_alignment: override the processor's ``face_alignment`` (see ``hf_fer.faces.get_face_alignment``).
        runtime / runtime_dtype: how the classifier runs (``hf_fer.runtime``): ``"auto"``, ``"eager"``, ``"compile"``,
            ``"onnx"``, ``"int8"`` / ``"auto"``, ``"fp32"``, ``"bf16"``, ``"fp16"``; the pick is ``pipe.runtime_choice``.

    Call options:
        top_k: labels per face (default: all, best first).
        function_to_apply: ``"softmax"``, ``"sigmoid"`` or ``"none"`` on the logits; by default chosen from the
            model's config exactly as transformers' image-classification pipeline does (softmax for single-label
            classifiers, sigmoid for multi-label or one-logit ones, none for regression).
        detect: ``False`` for inputs that are already aligned face crops (one face per image: the whole image).
        boxes / landmarks: faces you already have; for a list of inputs, one entry per input.
        batch_size: images per detector call and faces per classifier forward (default 8).
        errors: ``"report"`` (default for several inputs: a bad image gives ``{"error": ..., "input": ...}`` in its
            place and the rest continue) or ``"raise"`` (default for a single input).

    On CPU, creating the pipeline tunes glibc's malloc once for the process (``hf_fer.runtime.tune_cpu_allocator``:
    big buffers stay in the heap; about 20 % faster on batches of photos); ``HF_FER_TUNE_MALLOC=0`` leaves it alone.

    Models whose prediction for one image depends on the others in the batch (ARM in ``affinity_mode="batch"``)
    classify each face alone here, so one input never changes another's scores.
    """

    _load_image_processor = True
    _load_processor = False
    _load_video_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args, detector=None, face_alignment: dict | None = None,
                 max_image_size: int | None = DEFAULT_MAX_IMAGE_SIZE, runtime: str | None = None, runtime_dtype: str | None = None,
                 detection_size: int | None | str = DEFAULT_DETECTION_SIZE, **kwargs):
        if detection_size == "full":
            detection_size = None
        if detection_size is not None and (isinstance(detection_size, bool) or not isinstance(detection_size, int) or detection_size < 32):
            raise ValueError(f"{TASK}: detection_size must be an int >= 32, 'full' or None, got {detection_size!r}")
        if detector is not None and detection_size != DEFAULT_DETECTION_SIZE:
            raise ValueError(f"{TASK}: detection_size sets the built-in detector's working size; give it to your own "
                             "detector instead (e.g. RetinaFaceDetector.from_pretrained(max_size=...))")
        self._detector = detector
        self.detection_size = detection_size
        self._face_alignment_override = face_alignment
        self.max_image_size = max_image_size
        super().__init__(*args, **kwargs)
        if self.image_processor is None:
            raise ValueError(f"{TASK}: the model needs an image processor (preprocessor_config.json); none was found or given")
        self.model.eval()
        if self.device.type == "cpu":
            from ..runtime import tune_cpu_allocator

            tune_cpu_allocator()  # big per-chunk buffers stay in the heap instead of page-faulting in again each chunk
        # runtime= / runtime_dtype= (hf_fer.runtime; `dtype=` is transformers' weight dtype at load time)
        self.runtime_choice = None
        if runtime is not None or runtime_dtype is not None:
            from ..runtime import apply_runtime

            self.runtime_choice = apply_runtime(self.model, runtime or "auto", runtime_dtype or "auto",
                                                batch_size=self._batch_size or DEFAULT_BATCH_SIZE)
            logger.info("%s: %s", TASK, self.runtime_choice.describe())
        self.timings = _Timings()
        from ..evaluation.inference import ordered_label_names

        self.label_names = ordered_label_names(self.model.config.id2label)
        self.function_to_apply = _default_classification_function(self.model.config)
        self.classify_alone = getattr(self.model.config, "affinity_mode", None) == "batch"
        if self.classify_alone:
            logger.warning("%s: this model's affinity_mode is 'batch' (its output for one image depends on the other images "
                           "in a batch); the pipeline classifies each face alone so results never depend on other inputs. "
                           "ArmForImageClassification.calibrate_affinity() gives a batch-independent model.", TASK)

    # ------------------------------------------------------------------ configuration
    @property
    def face_alignment(self) -> dict:
        from . import get_face_alignment, validate_face_alignment
        from .alignment import _processor_size

        if self._face_alignment_override is not None:
            alignment = validate_face_alignment(dict(self._face_alignment_override))
        else:
            alignment = get_face_alignment(self.image_processor)
        if alignment["method"] == "box" and alignment.get("output_size") is None:
            # Warp each face straight to the classifier's input size: a face's crop never depends on the other
            # faces of the image (the largest-box size would), and all crops of a chunk stack into one tensor.
            alignment["output_size"] = _processor_size(self.image_processor)
        return alignment

    @property
    def detector(self):
        if self._detector is None:
            from . import RetinaFaceDetector

            self._detector = RetinaFaceDetector.from_pretrained(max_size=self.detection_size)
        if isinstance(self._detector, torch.nn.Module) and getattr(self, "_detector_ready", None) is not self._detector:
            self._detector.eval().to(self.device)  # once (eval() walks every submodule: not on each call)
            self._detector_ready = self._detector
        return self._detector

    def _sanitize_parameters(self, top_k=None, detect=None, boxes=None, landmarks=None, errors=None, timeout=None,
                             return_images=None, function_to_apply=None, **unused):
        if unused:
            set_at_creation = sorted(set(unused) & {"detector", "detection_size", "face_alignment", "max_image_size", "runtime", "runtime_dtype"})
            raise TypeError(f"{TASK}: unknown argument(s) {sorted(unused)}"
                            + (f"; {', '.join(set_at_creation)} is set when the pipeline is created: "
                               f"pipeline({TASK!r}, ..., {set_at_creation[0]}=...)" if set_at_creation else ""))
        params = {}
        for key, value in (("top_k", top_k), ("detect", detect), ("boxes", boxes), ("landmarks", landmarks),
                           ("errors", errors), ("return_images", return_images)):
            if value is not None:
                params[key] = value
        if function_to_apply is not None:
            params["function_to_apply"] = _classification_function(function_to_apply)
        if "top_k" in params and not _is_positive_integer(params["top_k"]):
            raise ValueError(f"top_k must be a positive integer (or None for every label), got {params['top_k']!r}")
        if "landmarks" in params and "boxes" not in params:
            raise ValueError("landmarks= needs boxes= for the same faces (they would otherwise be ignored and the "
                             "faces detected)")
        if "errors" in params and params["errors"] not in ("report", "raise"):
            raise ValueError(f"errors must be 'report' or 'raise', got {params['errors']!r}")
        # Everything runs in __call__'s chunked path; the three dicts are the same options.
        return params, {}, {}

    # ------------------------------------------------------------------ public call
    def __call__(self, inputs, **kwargs):
        """One input → its list of faces; a list/tuple → a list of results; any other iterable (generator,
        ``datasets`` column) → a generator of results, processed ``batch_size`` inputs at a time."""
        batch_size = kwargs.pop("batch_size", None)
        if batch_size is None:  # not `or`: batch_size=0 is an error, not "the default"
            batch_size = self._batch_size or DEFAULT_BATCH_SIZE
        if not _is_positive_integer(batch_size):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        batch_size = int(batch_size)
        kwargs.pop("num_workers", None)
        options, _, _ = self._sanitize_parameters(**kwargs)
        options = {**self._preprocess_params, **options}
        single = self._is_single(inputs)
        if single:
            options.setdefault("errors", "raise")
            for key in ("boxes", "landmarks"):
                if key in options:
                    options[key] = [options[key]]
            return next(iter(self._stream([inputs], batch_size, options)))
        options.setdefault("errors", "report")
        if isinstance(inputs, (list, tuple)):
            for key in ("boxes", "landmarks"):
                if key in options and len(options[key]) != len(inputs):
                    raise ValueError(f"{key}: expected one entry per input ({len(inputs)}), got {len(options[key])}")
            return list(self._stream(inputs, batch_size, options))
        if not isinstance(inputs, Iterable):
            raise TypeError(f"{TASK}: cannot read an image from {type(inputs).__name__}: expected a path, URL, bytes, PIL "
                            "image, numpy array or tensor, or a list/iterator of them")
        return self._stream(inputs, batch_size, options)

    @staticmethod
    def _is_single(inputs) -> bool:
        from PIL import Image

        if isinstance(inputs, (str, bytes, os.PathLike, Image.Image, np.ndarray, torch.Tensor)):
            return True
        return isinstance(inputs, dict) and ("bytes" in inputs or "path" in inputs)

    def _stream(self, inputs: Iterable, batch_size: int, options: dict) -> Iterator:
        top_k = options.get("top_k")
        iterator = iter(inputs)
        box_iter = iter(options["boxes"]) if "boxes" in options else None
        landmark_iter = iter(options["landmarks"]) if "landmarks" in options else None
        detect, keep_images = options.get("detect", True), bool(options.get("return_images"))

        def next_chunk():  # the inputs are read here, in the calling thread, one chunk at a time
            chunk = list(itertools.islice(iterator, batch_size))
            boxes = [next(box_iter) for _ in chunk] if box_iter is not None and chunk else None
            landmarks = [next(landmark_iter) for _ in chunk] if landmark_iter is not None and chunk else None
            return chunk, boxes, landmarks

        if detect:
            self._draft_size()  # loads the default detector here, never in the prefetch thread
        offset = 0
        chunk, boxes, landmarks = next_chunk()
        pool = pending = decoded = None
        try:
            while chunk:
                # Prefetch: the next chunk decodes in a background thread while this one goes through the detector
                # and the classifier (whose forwards leave the cores partly idle). One chunk ahead at most, so memory
                # stays bounded; only with more than one torch thread (the caller's thread budget).
                following = next_chunk()
                if following[0] and torch.get_num_threads() > 1:
                    if pool is None:
                        from concurrent.futures import ThreadPoolExecutor

                        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf_fer-decode")
                    pending = pool.submit(self.decode_images, following[0], boxes=following[1], detect=detect,
                                          start_index=offset + len(chunk), keep_images=keep_images)
                results = self.process_images(chunk, boxes=boxes, landmarks=landmarks, detect=detect,
                                              batch_size=batch_size, start_index=offset, keep_images=keep_images,
                                              decoded=decoded, function_to_apply=options.get("function_to_apply"))
                offset += len(chunk)
                for result in results:
                    if result.error is not None and options["errors"] == "raise":
                        raise result.exception if result.exception is not None else ValueError(result.error)
                    yield self.format_result(result, top_k=top_k)
                chunk, boxes, landmarks = following
                decoded = None  # without prefetch, process_images decodes the chunk itself
                if pending is not None:
                    started = time.perf_counter()
                    decoded, pending = pending.result(), None
                    self.timings.decode += time.perf_counter() - started  # only the wait shows end to end
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ the work
    def process_images(
        self,
        images: Sequence[Any],
        *,
        boxes: Sequence[Any] | None = None,
        landmarks: Sequence[Any] | None = None,
        detect: bool = True,
        batch_size: int = DEFAULT_BATCH_SIZE,
        start_index: int = 0,
        keep_images: bool = False,
        names: Sequence[str] | None = None,
        decoded: list | None = None,
        function_to_apply: str | None = None,
    ) -> list[FaceResult]:
        """Raw results (tensors) for a chunk of inputs; a bad input gives ``FaceResult(error=...)``, never an exception.

        ``decoded``: what :meth:`decode_images` returned for these inputs (decoded ahead of time), else decoded here.
        ``function_to_apply``: turns logits into scores (default: ``self.function_to_apply``, from the config).
        """
        function = _classification_function(function_to_apply) if function_to_apply is not None else self.function_to_apply
        timings = self.timings
        if decoded is None:
            started = time.perf_counter()
            decoded = self.decode_images(images, boxes=boxes, detect=detect, start_index=start_index,
                                         keep_images=keep_images, names=names)
            timings.decode += time.perf_counter() - started
        if len(decoded) != len(images):
            raise ValueError(f"decoded: expected {len(images)} entries, got {len(decoded)}")
        results: list[FaceResult] = [entry[0] for entry in decoded]
        tensors: list[torch.Tensor | None] = [entry[1] for entry in decoded]
        # index -> input, for images decoded below full size (see _align)
        drafted: dict[int, Any] = {index: entry[0].fetched if entry[0].fetched is not None else images[index]
                                   for index, entry in enumerate(decoded) if entry[2]}
        resized: list[torch.Tensor | None] = [entry[3] for entry in decoded]  # already at the detector's size
        del decoded
        timings.images += len(images)

        # Faces: user boxes, no detection (whole image), or one detector call for the rest of the chunk.
        alignment = self.face_alignment
        started = time.perf_counter()
        to_detect, whole_images = [], set()
        for index, (result, tensor) in enumerate(zip(results, tensors)):
            if tensor is None:
                continue
            user_boxes = boxes[index] if boxes is not None else None
            if user_boxes is not None:
                try:
                    result.boxes = _as_box_tensor(user_boxes)
                    result.landmarks = _as_landmark_tensor(landmarks[index] if landmarks is not None else None, result.boxes.shape[0])
                    if result.scale != (1.0, 1.0):  # user coordinates are in displayed pixels
                        sx, sy = result.scale
                        result.boxes = result.boxes / torch.tensor([sx, sy, sx, sy])
                        result.landmarks = None if result.landmarks is None else result.landmarks / torch.tensor([sx, sy])
                except (ValueError, TypeError, KeyError) as error:
                    result.error, result.exception, tensors[index] = f"{result.name}: {error}", error, None
            elif not detect:
                height, width = tensors[index].shape[1:]
                result.boxes = torch.tensor([[0.0, 0.0, float(width), float(height)]])
                whole_images.add(index)
            else:
                to_detect.append(index)
        if to_detect:
            # The detector resizes to its working size itself (uint8, antialiased) and maps results back; images the
            # decoding threads already resized with the detector's own resize are mapped back here with the
            # detector's own FaceDetections.scaled, so the results are the same.
            inputs = [resized[i] if resized[i] is not None else tensors[i] for i in to_detect]
            detections = self.detector.detect([image.to(self.device) for image in inputs])
            if len(detections) != len(to_detect):
                raise RuntimeError(f"detector returned {len(detections)} results for {len(to_detect)} images")
            for index, image, found in zip(to_detect, inputs, detections):
                if image is not tensors[index]:  # only the built-in detector's input is resized ahead
                    found = found.scaled(tensors[index].shape[2] / image.shape[2], tensors[index].shape[1] / image.shape[1])
                results[index].boxes = found.boxes.detach().float().cpu()
                results[index].landmarks = None if found.landmarks is None else found.landmarks.detach().float().cpu()
                results[index].detection_scores = found.scores.detach().float().cpu()
        del resized
        timings.detection += time.perf_counter() - started

        # Alignment: one batched warp per image (all its faces at once).
        started = time.perf_counter()
        crops: list[torch.Tensor] = []
        counts: list[int] = []
        for index, (result, tensor) in enumerate(zip(results, tensors)):
            if tensor is None or result.num_faces == 0:
                counts.append(0)
                continue
            if index in whole_images:
                crops.append(tensor.unsqueeze(0))  # already a face crop: the processor resizes it
            else:
                redecode = None
                if index in drafted:
                    def redecode(zoom, item=drafted[index], result=result, tensor=tensor):
                        return self._redecode(item, result, tensor, zoom)
                crops.append(self._align(tensor, result, alignment, redecode))
            counts.append(result.num_faces)
            tensors[index] = None  # the full image is no longer needed: keep peak memory to one chunk of crops
        for result in results:  # report coordinates in pixels of the full-size displayed image
            if result.scale != (1.0, 1.0) and result.boxes is not None:
                sx, sy = result.scale
                result.boxes = result.boxes * torch.tensor([sx, sy, sx, sy])
                if result.landmarks is not None:
                    result.landmarks = result.landmarks * torch.tensor([sx, sy])
        timings.alignment += time.perf_counter() - started

        total = sum(counts)
        timings.faces += total
        if total == 0:
            for result in results:
                if result.error is None:
                    result.probabilities = torch.zeros(0, len(self.label_names))
                    result.boxes = result.boxes if result.boxes is not None else torch.zeros(0, 4)
            return results

        # Preprocess and classify every face of the chunk together.
        started = time.perf_counter()
        if len({tuple(c.shape[1:]) for c in crops}) == 1:
            batch = torch.cat(crops) if len(crops) > 1 else crops[0]
        else:
            batch = [face for group in crops for face in group]  # varying sizes (whole images): the processor resizes each
        pixel_values = self.image_processor(images=batch, return_tensors="pt")["pixel_values"]
        timings.preprocess += time.perf_counter() - started

        started = time.perf_counter()
        step = 1 if self.classify_alone else batch_size
        outputs = []
        with torch.inference_mode():
            for chunk in pixel_values.split(step):
                logits = self.model(pixel_values=chunk.to(self.device, self.model.dtype)).logits
                outputs.append(_apply_classification_function(logits.float(), function).cpu())
        probabilities = torch.cat(outputs)
        timings.classification += time.perf_counter() - started

        for result, part in zip(results, probabilities.split(counts)):
            if result.error is None:
                result.probabilities = part
                if result.boxes is None:
                    result.boxes = torch.zeros(0, 4)
        return results

    def decode_images(self, images: Sequence[Any], *, boxes: Sequence[Any] | None = None, detect: bool = True,
                      start_index: int = 0, keep_images: bool = False, names: Sequence[str] | None = None) -> list:
        """Decode a chunk of inputs: ``[(FaceResult, uint8 [3, H, W] or None, decoded below full size, detector
        input or None), ...]``. The last is the image already at the built-in detector's working size (its own
        resize, done here while the decoded pixels are still in cache, in the decoding threads), else ``None``.

        Safe to run in another thread than the one calling :meth:`process_images` (prefetch): it touches no shared
        state beyond reading the detector's working size."""
        draft = self._draft_size() if detect else None
        resize = self._detector_resize() if draft is not None else None
        jobs = []
        for index, item in enumerate(images):
            name = names[index] if names is not None else _input_name(item, start_index + index)
            detected = draft is not None and (boxes is None or boxes[index] is None)
            jobs.append((item, name, draft if detected else None, keep_images, resize if detected else None))
        if len(jobs) > 1 and torch.get_num_threads() > 1:
            # Decoding is independent per image and PIL releases the GIL while decoding: use the cores torch uses.
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(len(jobs), torch.get_num_threads())) as pool:
                decoded = list(pool.map(lambda job: self._decode(*job), jobs))
        else:
            decoded = [self._decode(*job) for job in jobs]
        return [(result, tensor, tensor is not None and result.scale != (1.0, 1.0) and job[2] is not None, small)
                for (result, tensor, small), job in zip(decoded, jobs)]

    def _decode(self, item, name: str, draft: int | None, keep_image: bool, resize=None
                ) -> tuple[FaceResult, torch.Tensor | None, torch.Tensor | None]:
        """One input -> (result with its displayed size and scale, uint8 [3, H, W] or None on error, ``resize`` of
        the latter or None).

        ``draft``: long side to decode JPEGs at (DCT scaling); photos larger than ``max_image_size`` are reduced
        while decoding. Coordinates are reported in pixels of the full-size displayed image in both cases."""
        from ..image_io import ImageDecodeError, fetch_url, is_url, load_image

        try:
            if isinstance(item, dict) and item.get("bytes") is None and is_url(item.get("path")):
                item = item["path"]  # a `datasets` entry pointing at a URL
            fetched = None
            if is_url(item):  # fetched once: the header read, the decode and a finer re-decode all use the bytes
                item = fetched = fetch_url(item, name=name)
            displayed = _displayed_size(item) if (self.max_image_size or draft) else None
            limit = self.max_image_size
            if draft is not None and displayed is not None:
                # the detector's working size for this photo (longer than max_size for an elongated one: see
                # RetinaFaceDetector.working_size): decode it that finely, and never reduce it below that
                draft = max(self.detector.working_size(displayed[1], displayed[0]))
                limit = None if limit is None else max(limit, draft)
            reduce = displayed is not None and limit is not None and max(displayed) > limit
            # paths, bytes, PIL, arrays, `datasets` {"bytes", "path"} entries
            image = load_image(item, name=name, max_size=limit if reduce else None,
                               draft_size=draft if displayed is not None else None)
        except (ImageDecodeError, OSError, ValueError, TypeError) as error:
            message = str(error)
            return FaceResult(name=name, size=(0, 0), error=message if name in message else f"{name}: {message}",
                              exception=error), None, None
        drafted = draft is not None and not reduce and displayed is not None and image.size != displayed
        size = displayed if reduce or drafted else image.size
        scale = (size[0] / image.size[0], size[1] / image.size[1])
        kept = None
        if keep_image:
            # Drawn on with displayed coordinates (annotation): the full-size displayed image, whether the pixels used
            # for detection were drafted or reduced (photos over max_image_size); results are unchanged.
            kept = load_image(item, name=name) if drafted or reduce else image
        # A view of the pixels only when they are ours: a caller's own PIL image (returned as is by load_image) is
        # copied, as before, so that nothing the caller does to it later can reach the results.
        tensor = _image_to_tensor(image) if image is not item else torch.from_numpy(np.array(image)).permute(2, 0, 1)
        result = FaceResult(name=name, size=size, image=kept, scale=scale, fetched=fetched if drafted else None)
        return result, tensor, None if resize is None else resize(tensor)

    def _align(self, tensor: torch.Tensor, result: FaceResult, alignment: dict, redecode=None) -> torch.Tensor:
        """All faces of one image in one warp. ``redecode(zoom)``: for images decoded below full size, called when a
        crop would enlarge the decoded pixels (``zoom`` output pixels per decoded pixel > 1) to decode finer."""
        from .alignment import alignment_transforms, warp_affine

        if alignment.get("method") == "similarity_5pt" and result.landmarks is None:
            if not getattr(self, "_warned_fallback", False):
                logger.warning("%s: no landmarks for some faces (boxes only); they are cropped by box instead of the "
                               "checkpoint's 5-point alignment", TASK)
                self._warned_fallback = True
            alignment = dict(BOX_FALLBACK_ALIGNMENT, output_size=alignment.get("output_size"))
        found = alignment_transforms(result.boxes, result.landmarks, alignment)
        if found is None:  # method "none": the whole image is the face
            return tensor[None].clone()
        matrices, size = found
        if redecode is not None:
            zoom = float(torch.linalg.matrix_norm(matrices[:, :, :2], ord=2).max())
            if zoom > 1.0 and (finer := redecode(zoom)) is not None:
                tensor = finer
                matrices, size = alignment_transforms(result.boxes, result.landmarks, alignment)
        return warp_affine(tensor, matrices, size)

    def _redecode(self, item, result: FaceResult, tensor: torch.Tensor, zoom: float):
        """Decode ``item`` again, finer (a crop needs more pixels than the draft decode kept); updates ``result``'s
        coordinates and scale to the new pixels. ``None`` when no finer decode exists or it fails."""
        from ..image_io import load_image

        height, width = tensor.shape[1:]
        full = max(result.size)
        limit = min(full, self.max_image_size) if self.max_image_size else full
        if max(height, width) >= limit:
            return None
        wanted = min(math.ceil(max(height, width) * zoom), limit)
        try:
            image = load_image(item, name=result.name, max_size=limit if limit < full else None,
                               draft_size=wanted if wanted < full else None)
        except Exception:  # noqa: BLE001 — it decoded a moment ago; keep the draft pixels
            return None
        if image.size == (width, height):
            return None
        fx, fy = image.size[0] / width, image.size[1] / height
        result.boxes = result.boxes * torch.tensor([fx, fy, fx, fy])
        if result.landmarks is not None:
            result.landmarks = result.landmarks * torch.tensor([fx, fy])
        result.scale = (result.size[0] / image.size[0], result.size[1] / image.size[1])
        return _image_to_tensor(image)

    def _detector_resize(self):
        """The built-in detector's resize to its working size (``RetinaFaceDetector.resize_input``) when it is used
        on CPU without landmark refinement (which needs the full image), else ``None``."""
        from .retinaface import RetinaFaceDetector

        detector = self.detector
        if (isinstance(detector, RetinaFaceDetector) and detector.max_size and not detector.refine_landmarks
                and self.device.type == "cpu" and detector.mean.device.type == "cpu"):
            return detector.resize_input
        return None

    def _draft_size(self) -> int | None:
        """Long side to decode JPEGs at before detection: the built-in detector's working size (it resizes to it
        anyway; crops that need more pixels get a finer decode), unless it refines landmarks at full resolution."""
        from .retinaface import RetinaFaceDetector

        detector = self.detector
        if isinstance(detector, RetinaFaceDetector) and detector.max_size and not detector.refine_landmarks:
            return int(detector.max_size)
        return None

    # ------------------------------------------------------------------ output
    def format_result(self, result: FaceResult, top_k: int | None = None, probabilities: torch.Tensor | None = None):
        """The ★ output: a list of ``{"box", "landmarks", "detection_score", "labels"}`` dicts, best label first."""
        if result.error is not None:
            return {"input": result.name, "error": result.error}
        probabilities = result.probabilities if probabilities is None else probabilities
        k = len(self.label_names) if top_k is None else max(1, min(int(top_k), len(self.label_names)))
        if result.num_faces == 0:
            return []
        scores, indices = probabilities.topk(k, dim=-1)
        boxes = _round_list(result.boxes, 2)
        landmarks = _round_list(result.landmarks, 2) if result.landmarks is not None else [None] * len(boxes)
        detection = _round_list(result.detection_scores, 5) if result.detection_scores is not None else [None] * len(boxes)
        names = self.label_names
        return [
            {
                "box": {"xmin": box[0], "ymin": box[1], "xmax": box[2], "ymax": box[3]},
                "landmarks": points,
                "detection_score": det,
                "labels": [{"label": names[i], "score": s} for i, s in zip(row_indices, row_scores)],
            }
            for box, points, det, row_indices, row_scores in zip(boxes, landmarks, detection, indices.tolist(), scores.tolist())
        ]

    # transformers' abstract single-item interface (used by nothing in hf_fer; kept correct for completeness)
    def preprocess(self, image, **params):
        return {"result": self.process_images([image], detect=params.get("detect", True))[0]}

    def _forward(self, model_inputs, **params):
        return model_inputs

    def postprocess(self, model_outputs, top_k=None, **params):
        return self.format_result(model_outputs["result"], top_k=top_k)


def _default_model() -> str | None:
    try:
        from .. import pretrained_path
    except ImportError:  # the shipped model is not installed in this checkout
        return None
    try:
        return str(pretrained_path())
    except Exception:  # noqa: BLE001
        return None


def register_pipeline() -> None:
    """Register the task with transformers (idempotent); the default model is the one shipped in the package."""
    if PIPELINE_REGISTRY.supported_tasks.get(TASK, {}).get("impl") is FacialExpressionRecognitionPipeline:
        return
    default = _default_model()
    PIPELINE_REGISTRY.register_pipeline(
        TASK,
        pipeline_class=FacialExpressionRecognitionPipeline,
        pt_model=AutoModelForImageClassification,
        default={"model": (default, None)} if default else None,
        type="image",
    )
