"""hf_fer: facial expression recognition models as native Hugging Face ``transformers`` models.

``import hf_fer`` registers every architecture (POSTER V2, ARM, DACL, DMUE, VT-NR) with
``AutoConfig``, ``AutoModelForImageClassification`` and ``AutoImageProcessor``, so that

    model = AutoModelForImageClassification.from_pretrained("some-org/poster-v2-rafdb")

works like any built-in model.
"""
from __future__ import annotations

__version__ = "0.1.0"

from . import labels
from .labels import get_label_names
from .models import ARCHITECTURES, available_architectures, register_all
from .models.vt_nr import NeuralResizer, SpatialTransformerNetwork

register_all()

__all__ = ["__version__", "labels", "get_label_names", "ARCHITECTURES", "available_architectures", "register_all", "NeuralResizer", "SpatialTransformerNetwork"]

# The face pipeline task ("facial-expression-recognition"), registered with transformers' PIPELINE_REGISTRY.
from .faces.pipeline import register_pipeline as _register_pipeline  # noqa: E402

_register_pipeline()
