"""Tiny configs of every architecture (seconds on a CPU), shared by the common and regression tests."""
from __future__ import annotations

from hf_fer.models.arm import ArmConfig
from hf_fer.models.dacl import DaclConfig
from hf_fer.models.dmue import DmueConfig
from hf_fer.models.mini_xception import MiniXceptionConfig
from hf_fer.models.poster_v2 import PosterV2Config
from hf_fer.models.vt_nr import VtNrConfig

TINY_SWIN = {"model_type": "swin", "image_size": 32, "patch_size": 4, "embed_dim": 8, "depths": [1, 1], "num_heads": [1, 2],
             "window_size": 4, "drop_path_rate": 0.0}

# (config kwargs, input image side, input channels)
TINY = {
    "arm": (dict(backbone_depths=[1, 1, 1, 1], image_size=64, de_albino_kernel_size=8, de_albino_stride=4), 64, 3),
    "dacl": (dict(backbone_depths=[1, 1, 1, 1], image_size=64, attention_hidden_sizes=[32, 16, 8]), 64, 3),
    "dmue": (dict(backbone_depths=[1, 1, 1, 1]), 32, 3),
    "poster_v2": (dict(
        internal_size=56, landmark_stem_channels=8, landmark_stage_channels=[8, 16, 16],
        landmark_downsample_expansions=[16, 16, 24], landmark_block_expansions=[16, 24, 16], landmark_stage_depths=[1, 2, 1],
        landmark_output_channels=24, ir_stem_channels=8, ir_stage_channels=[8, 16, 16], ir_stage_depths=[2, 1, 2],
        cross_attention_heads=[1, 2, 2], hidden_size=32, num_attention_heads=4, intermediate_size=64), 56, 3),
    "vt_nr": (dict(backbone_config=TINY_SWIN, image_size=64, resizer_scale_factor=0.5, head_hidden_size=16,
                   stn_conv_channels=[4, 4], stn_hidden_size=8, resizer_channels=4), 64, 3),
    "mini_xception": (dict(stem_channels=[4, 4], block_channels=[8, 8]), 32, 1),
}

CONFIG_CLASSES = {"arm": ArmConfig, "dacl": DaclConfig, "dmue": DmueConfig, "poster_v2": PosterV2Config, "vt_nr": VtNrConfig,
                  "mini_xception": MiniXceptionConfig}


def tiny_config(arch: str, **overrides):
    kwargs, _, _ = TINY[arch]
    return CONFIG_CLASSES[arch](**{**kwargs, **overrides})


def input_shape(arch: str, batch_size: int = 2) -> tuple[int, int, int, int]:
    _, side, channels = TINY[arch]
    return (batch_size, channels, side, side)
