import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

from .configuration_toy import ToyConfig
from .layers_toy import ConvBlock


class ToyPreTrainedModel(PreTrainedModel):
    config_class = ToyConfig
    base_model_prefix = "toy"
    main_input_name = "pixel_values"
    input_modalities = ("image",)


class ToyForImageClassification(ToyPreTrainedModel):
    def __init__(self, config: ToyConfig):
        super().__init__(config)
        self.block = ConvBlock(config.num_channels, config.hidden_size)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, **kwargs) -> ImageClassifierOutput:
        features = self.block(pixel_values).mean(dim=(2, 3))
        logits = self.classifier(features)
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)
