"""hf_fer: facial expression recognition models as native Hugging Face ``transformers`` models.

``import hf_fer`` registers every architecture (POSTER V2, ARM, DACL, DMUE, VT-NR, mini-Xception) with
``AutoConfig``, ``AutoModelForImageClassification`` and ``AutoImageProcessor``, so that

    model = AutoModelForImageClassification.from_pretrained("some-org/poster-v2-rafdb")

works like any built-in model. ``hf_fer.pretrained_path()`` is the folder of the model shipped inside the
package (``DEFAULT_MODEL``, the FER2013 mini-Xception), usable offline with any ``from_pretrained``.
"""
from __future__ import annotations

__version__ = "0.1.0"

from . import labels
from .image_processors import image_processor_for
from .labels import get_label_names
from .models import ARCHITECTURES, available_architectures, register_all
from .models.vt_nr import NeuralResizer, SpatialTransformerNetwork
from .pretrained import DEFAULT_MODEL, pretrained_path

register_all()

__all__ = ["__version__", "labels", "get_label_names", "ARCHITECTURES", "available_architectures", "register_all", "NeuralResizer", "SpatialTransformerNetwork",
           "DEFAULT_MODEL", "pretrained_path", "image_processor_for"]

# The face pipeline task ("facial-expression-recognition"), registered with transformers' PIPELINE_REGISTRY.
from .faces.pipeline import register_pipeline as _register_pipeline  # noqa: E402

_register_pipeline()
