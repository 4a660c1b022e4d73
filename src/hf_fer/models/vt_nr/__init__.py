"""VT-NR: Vision Transformer with Neural Resizer (+ STN, F-PDLS loss), ICASSP 2022 (arXiv 2204.02181)."""
from .configuration_vt_nr import FERPLUS_CLASS_NAMES, FERPLUS_LABEL_PRIOR, VtNrConfig
from .image_processing_vt_nr import VtNrImageProcessor
from .loss_vt_nr import prior_label_smoothing_loss
from .modeling_vt_nr import VtNrClassificationHead, VtNrForImageClassification, VtNrImageClassifierOutput, VtNrModel, VtNrPreTrainedModel
from .neural_resizer import NeuralResizer
from .stn import SpatialTransformerNetwork

__all__ = [
    "FERPLUS_CLASS_NAMES",
    "FERPLUS_LABEL_PRIOR",
    "VtNrConfig",
    "VtNrImageProcessor",
    "VtNrForImageClassification",
    "VtNrPreTrainedModel",
    "VtNrModel",
    "VtNrClassificationHead",
    "VtNrImageClassifierOutput",
    "NeuralResizer",
    "SpatialTransformerNetwork",
    "prior_label_smoothing_loss",
]
