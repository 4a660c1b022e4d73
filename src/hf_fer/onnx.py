"""Run an exported model folder (``hf-fer export``) with ONNX Runtime, the way the transformers pipeline runs it.

    from hf_fer.onnx import OnnxClassifier

    classifier = OnnxClassifier("arm-onnx")          # model_int8.onnx when exported, else model.onnx
    classifier("face.jpg")                            # [{'label': 'happiness', 'score': 0.93}, ...] best first
    classifier(["a.jpg", pil_image], top_k=1)         # one list per image

Images are decoded with PIL and preprocessed with NumPy from the folder's ``preprocessor_config.json``
(grayscale when the model has one input channel, resize with the saved PIL filter, ConvNext's ``crop_pct``,
optional centre crop, rescale, normalise), so inference itself needs neither PyTorch nor transformers' image
processors. Labels come from the folder's ``config.json``. The images must
already be face crops, as for ``pipeline("image-classification")``; use the face pipeline to find faces.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

ONNX_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"
PRECISIONS = ("auto", "fp32", "int8")


def decode_image(image):
    """A path, bytes, NumPy array or PIL image → RGB PIL image, through hf_fer's one decoder
    (:func:`hf_fer.image_io.load_image`: EXIF orientation, pixel limits, clear errors naming the file)."""
    from .image_io import load_image

    return load_image(image, mode="RGB")


class ImagePreprocessor:
    """NumPy/PIL version of an hf_fer image processor, built from its ``preprocessor_config.json``."""

    def __init__(self, config: dict):
        self.config = config
        self.do_resize = config.get("do_resize", True)
        self.size = config.get("size") or {}
        self.resample = int(config.get("resample", 2))  # PIL code: 2 bilinear, 3 bicubic
        self.do_center_crop = config.get("do_center_crop", False)
        self.crop_size = config.get("crop_size") or {}
        self.do_rescale = config.get("do_rescale", True)
        self.rescale_factor = float(config.get("rescale_factor", 1 / 255))
        self.do_normalize = config.get("do_normalize", True)
        # ConvNext's rule (transformers ConvNextImageProcessor): below 384 px the short side goes to
        # shortest_edge / crop_pct, then a shortest_edge square is cropped from the centre; from 384 px it warps to a square
        self.crop_pct = config.get("crop_pct")
        processor_type = str(config.get("image_processor_type") or "")
        if self.crop_pct is not None and not processor_type.startswith("ConvNext"):
            raise ValueError(f"preprocessor_config.json: crop_pct is implemented for ConvNext image processors only, "
                             f"got image_processor_type {processor_type!r}")
        self.mean = np.asarray(config.get("image_mean", [0.5, 0.5, 0.5]), np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(config.get("image_std", [0.5, 0.5, 0.5]), np.float32).reshape(-1, 1, 1)
        # One mean/std value = a grayscale model (mini-Xception): PIL's "L" is the BT.601 luma it was trained on.
        self.grayscale = len(self.mean) == 1

    def _resized(self, image):
        if "height" in self.size and "width" in self.size:
            return image.resize((int(self.size["width"]), int(self.size["height"])), resample=self.resample)
        if "shortest_edge" not in self.size:
            raise ValueError(f"preprocessor_config.json: unsupported size {self.size}")
        edge = int(self.size["shortest_edge"])
        if self.crop_pct is None:
            return self._shortest_edge_resized(image, edge)
        if edge >= 384:
            return image.resize((edge, edge), resample=self.resample)
        image = self._shortest_edge_resized(image, int(edge / self.crop_pct))
        top, left = (image.height - edge) // 2, (image.width - edge) // 2
        return image.crop((left, top, left + edge, top + edge))

    def _shortest_edge_resized(self, image, edge: int):
        """Short side to ``edge``, aspect ratio kept (transformers' rule)."""
        width, height = image.size
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = edge, int(edge * long / short)
        new_width, new_height = (new_short, new_long) if width <= height else (new_long, new_short)
        return image.resize((new_width, new_height), resample=self.resample)

    def __call__(self, images: Sequence) -> np.ndarray:
        batch = []
        for image in images:
            if self.grayscale:
                image = image.convert("L")  # before resizing, as the model's own processor does
            if self.do_resize:
                image = self._resized(image)
            array = np.asarray(image, dtype=np.float32)
            array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)  # CHW
            if self.do_center_crop:
                array = _center_crop(array, int(self.crop_size["height"]), int(self.crop_size["width"]))
            if self.do_rescale:
                array = array * np.float32(self.rescale_factor)
            if self.do_normalize:
                array = (array - self.mean) / self.std
            batch.append(array.astype(np.float32))
        return np.ascontiguousarray(np.stack(batch))


def _center_crop(array: np.ndarray, crop_height: int, crop_width: int) -> np.ndarray:
    """Centre crop of a ``[C, H, W]`` array, the top/left offsets rounded down as in transformers' ``center_crop``."""
    height, width = array.shape[1:]
    top, left = max((height - crop_height) // 2, 0), max((width - crop_width) // 2, 0)
    return array[:, top:top + crop_height, left:left + crop_width]


class OnnxClassifier:
    """An ``hf-fer export`` folder run with ONNX Runtime; returns what ``pipeline("image-classification")`` returns.

    Args:
        folder: the export folder (``model.onnx`` and/or ``model_int8.onnx``, ``config.json``,
            ``preprocessor_config.json``).
        precision: ``"auto"`` (int8 when the folder has it, else fp32), ``"fp32"`` or ``"int8"``.
        providers: ONNX Runtime execution providers (default: CPU).
        threads: intra-op threads (default: ONNX Runtime's choice).
        batch_size: images per run when given a list.
    """

    def __init__(self, folder: str | os.PathLike, precision: str = "auto", providers: Sequence[str] | None = None,
                 threads: int | None = None, batch_size: int = 32):
        import onnxruntime

        folder = Path(folder).expanduser()
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        for required in ("config.json", "preprocessor_config.json"):
            if not (folder / required).is_file():
                raise FileNotFoundError(f"{folder}: no {required}; is this an `hf-fer export` folder?")
        if precision == "auto":
            precision = "int8" if (folder / INT8_FILE).is_file() else "fp32"
        path = folder / (INT8_FILE if precision == "int8" else ONNX_FILE)
        if not path.is_file():
            raise FileNotFoundError(f"{folder}: no {path.name} (export with --format onnx{' --quantize int8' if precision == 'int8' else ''})")
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        id2label = {int(k): v for k, v in (config.get("id2label") or {}).items()}
        self.folder, self.path, self.precision, self.batch_size = folder, path, precision, batch_size
        self.preprocess = ImagePreprocessor(json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8")))
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(path), options, providers=list(providers or ["CPUExecutionProvider"]))
        self.input_name = self.session.get_inputs()[0].name
        num_labels = int(self.session.get_outputs()[0].shape[-1])
        self.labels = [id2label.get(i, f"LABEL_{i}") for i in range(num_labels)]

    def logits(self, pixel_values: np.ndarray) -> np.ndarray:
        """Raw logits ``[N, num_labels]`` of preprocessed ``pixel_values [N, 3, H, W]``."""
        return self.session.run(None, {self.input_name: np.asarray(pixel_values, np.float32)})[0]

    def __call__(self, images, top_k: int | None = 5):
        """One image → ``[{"label", "score"}, ...]`` (softmax, best first, ``top_k`` of them); a list → a list of those."""
        single = not isinstance(images, (list, tuple))
        decoded = [decode_image(image) for image in ([images] if single else images)]
        results = []
        for start in range(0, len(decoded), self.batch_size):
            logits = self.logits(self.preprocess(decoded[start:start + self.batch_size])).astype(np.float64)
            scores = np.exp(logits - logits.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            k = len(self.labels) if top_k is None else min(int(top_k), len(self.labels))
            for row in scores:
                order = np.argsort(-row, kind="stable")[:k]
                results.append([{"label": self.labels[i], "score": float(row[i])} for i in order])
        return results[0] if single else results

    def __repr__(self) -> str:
        return f"OnnxClassifier({str(self.folder)!r}, precision={self.precision!r}, labels={len(self.labels)})"
