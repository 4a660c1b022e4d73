from transformers import PretrainedConfig


class ToyConfig(PretrainedConfig):
    """Conv → BN → ReLU → global average pool → linear head."""

    model_type = "toy"

    def __init__(self, num_channels: int = 3, hidden_size: int = 8, **kwargs):
        kwargs.setdefault("problem_type", "single_label_classification")
        super().__init__(**kwargs)
        self.num_channels = num_channels
        self.hidden_size = hidden_size
