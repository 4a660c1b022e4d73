"""DMUE (CVPR 2021): latent distribution mining + pairwise uncertainty estimation, ResNet-18 backbone."""
from .configuration_dmue import DmueConfig
from .image_processing_dmue import DmueImageProcessor
from .modeling_dmue import (
    DmueForImageClassification,
    DmueImageClassifierOutput,
    DmuePreTrainedModel,
    build_dmue_resnet18,
    dmue_ramp_weights,
)

__all__ = [
    "DmueConfig",
    "DmueForImageClassification",
    "DmueImageClassifierOutput",
    "DmueImageProcessor",
    "DmuePreTrainedModel",
    "build_dmue_resnet18",
    "dmue_ramp_weights",
]
