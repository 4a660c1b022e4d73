"""mini-Xception (Arriaga, Valdenegro-Toro & Plöger 2017), the FER2013 model shipped as hf_fer's default."""
from .configuration_mini_xception import MiniXceptionConfig
from .image_processing_mini_xception import MiniXceptionImageProcessor
from .modeling_mini_xception import MiniXceptionForImageClassification, MiniXceptionModel, MiniXceptionPreTrainedModel

__all__ = ["MiniXceptionConfig", "MiniXceptionForImageClassification", "MiniXceptionImageProcessor", "MiniXceptionPreTrainedModel", "MiniXceptionModel"]
