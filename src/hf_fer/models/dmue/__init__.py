"""DMUE (CVPR 2021): latent distribution mining + pairwise uncertainty estimation, ResNet-18 backbone.

One model class for the deployed classifier and the multi-branch training model; the decisions taken on
upstream's training quirks are documented at the top of ``modeling_dmue.py``.
"""
from .configuration_dmue import DmueConfig
from .image_processing_dmue import DmueImageProcessor
from .modeling_dmue import (
    DmueForImageClassification,
    DmueImageClassifierOutput,
    DmueModel,
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
    "DmueModel",
    "build_dmue_resnet18",
    "dmue_ramp_weights",
]
