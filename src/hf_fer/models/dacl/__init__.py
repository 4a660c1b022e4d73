"""DACL (Deep Attentive Center Loss, Farzaneh & Qi, WACV 2021) as a transformers model."""
from .configuration_dacl import DaclConfig
from .image_processing_dacl import DaclImageProcessor
from .modeling_dacl import (
    DaclAttentionNetwork,
    DaclForImageClassification,
    DaclImageClassifierOutput,
    DaclModel,
    DaclPreTrainedModel,
    DaclSparseCenterLoss,
)

__all__ = [
    "DaclConfig", "DaclForImageClassification", "DaclImageProcessor", "DaclImageClassifierOutput",
    "DaclAttentionNetwork", "DaclSparseCenterLoss", "DaclPreTrainedModel", "DaclModel",
]
