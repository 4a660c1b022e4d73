"""ARM (Amend Representation Module, Shi & Zhu 2021) as a transformers model."""
from .configuration_arm import ArmConfig
from .image_processing_arm import ArmImageProcessor
from .modeling_arm import ArmAmendModule, ArmForImageClassification, ArmModel, ArmPreTrainedModel

__all__ = ["ArmConfig", "ArmForImageClassification", "ArmImageProcessor", "ArmAmendModule", "ArmModel", "ArmPreTrainedModel"]
