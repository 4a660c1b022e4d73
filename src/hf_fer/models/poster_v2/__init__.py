"""POSTER V2 (POSTER++) for facial expression recognition, as a transformers model (arXiv 2301.12149)."""
from .configuration_poster_v2 import PosterV2Config
from .image_processing_poster_v2 import PosterV2ImageProcessor
from .ir50 import IR50Backbone
from .mobilefacenet import MobileFaceNetLandmarkBackbone
from .modeling_poster_v2 import PosterV2ForImageClassification, PosterV2Model, PosterV2PreTrainedModel

__all__ = [
    "PosterV2Config",
    "PosterV2ForImageClassification",
    "PosterV2ImageProcessor",
    "PosterV2Model",
    "PosterV2PreTrainedModel",
    "IR50Backbone",
    "MobileFaceNetLandmarkBackbone",
]
