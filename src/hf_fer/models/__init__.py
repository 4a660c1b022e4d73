"""Registry of the architectures hf_fer ships, and their registration with the transformers Auto classes.

Each architecture lives in its own self-contained folder ``hf_fer/models/<arch>/`` (the folder is what
``save_pretrained`` copies to the Hub as remote code, so it imports only torch/torchvision/transformers
and its sibling files). Its ``__init__.py`` exports ``<Name>Config``, ``<Name>ForImageClassification`` and
``<Name>ImageProcessor``; ``hf_fer/converters/convert_<arch>_original.py`` maps upstream checkpoints (see
``docs/adding_an_architecture.md``).
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification, AutoVideoProcessor


@dataclass(frozen=True)
class Architecture:
    name: str  # ★ arch name: --arch, folder name, config.model_type
    class_prefix: str  # <Name> in <Name>Config / <Name>ForImageClassification / <Name>ImageProcessor
    paper: str
    package: str | None = None  # import path of the model folder; default hf_fer.models.<name>

    @property
    def package_name(self) -> str:
        return self.package or f"hf_fer.models.{self.name}"

    @property
    def module(self):
        return importlib.import_module(self.package_name)

    @property
    def converter(self):
        """The ``convert_<name>_original`` module: ``hf_fer.converters`` for built-in architectures (kept out of
        the model folder, which must stay self-contained remote code), the plug-in's own package otherwise."""
        package = "hf_fer.converters" if self.package is None else self.package
        return importlib.import_module(f"{package}.convert_{self.name}_original")

    @property
    def config_class(self):
        return getattr(self.module, f"{self.class_prefix}Config")

    @property
    def model_class(self):
        return getattr(self.module, f"{self.class_prefix}ForImageClassification")

    @property
    def base_model_class(self):
        """``<Name>Model`` (registered with ``AutoModel``), or ``None`` for a plug-in that has no base model."""
        return getattr(self.module, f"{self.class_prefix}Model", None)

    @property
    def image_processor_class(self):
        return getattr(self.module, f"{self.class_prefix}ImageProcessor")


ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture("poster_v2", "PosterV2", "POSTER V2: A simpler and stronger facial expression recognition network (arXiv 2301.12149)"),
        Architecture("arm", "Arm", "Learning to Amend Facial Expression Representation via De-albino and Affinity (arXiv 2103.10189)"),
        Architecture("dacl", "Dacl", "Facial Expression Recognition in the Wild via Deep Attentive Center Loss (WACV 2021)"),
        Architecture("dmue", "Dmue", "Dive into Ambiguity: Latent Distribution Mining and Pairwise Uncertainty Estimation for FER (CVPR 2021)"),
        Architecture("vt_nr", "VtNr", "Vision Transformer Equipped with Neural Resizer on Facial Expression Recognition Task (ICASSP 2022)"),
        Architecture("mini_xception", "MiniXception", "Real-time Convolutional Neural Networks for Emotion and Gender Classification (arXiv 1710.07557)"),
    )
}


class NoVideoProcessor:
    """What ``AutoVideoProcessor`` finds for hf_fer architectures: installed code that refuses, clearly.

    hf_fer models are image models. Without an entry in ``AutoVideoProcessor``'s table, transformers derives
    a video-processor class from the folder's ``AutoImageProcessor`` ``auto_map`` and, because no installed
    class matches, asks "Do you wish to run the custom code? [y/N]" (``pipeline()`` does this for every
    model, blocking a non-interactive script for 15 s) and imports the folder's code on "y". With this
    entry the folder's code is never imported: an explicit ``AutoVideoProcessor`` call gets this error, and
    ``pipeline()``, which treats the video processor as optional, goes on without one.
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        raise ValueError(
            f"{pretrained_model_name_or_path}: hf_fer architectures are image models and have no video processor; "
            "use AutoImageProcessor (for videos, hf_fer's video pipeline decodes frames and uses the image processor)"
        )


def available_architectures() -> list[str]:
    """Architectures whose folder is present in this installation."""
    return [name for name, arch in ARCHITECTURES.items() if importlib.util.find_spec(arch.package_name) is not None]


def register_architecture(arch: Architecture) -> None:
    """Register one architecture's config, model and image processor with the Auto classes (idempotent)."""
    config_class = arch.config_class
    if config_class.model_type != arch.name:
        raise ValueError(f"{config_class.__name__}.model_type is {config_class.model_type!r}, expected {arch.name!r}")
    AutoConfig.register(arch.name, config_class, exist_ok=True)
    if arch.base_model_class is not None:
        AutoModel.register(config_class, arch.base_model_class, exist_ok=True)
    AutoModelForImageClassification.register(config_class, arch.model_class, exist_ok=True)
    AutoImageProcessor.register(config_class, image_processor_classes={"torchvision": arch.image_processor_class}, exist_ok=True)
    # Installed code for AutoVideoProcessor too: no trust prompt, the folder's copied code never runs.
    AutoVideoProcessor.register(config_class, video_processor_classes={"torchvision": NoVideoProcessor, "pil": NoVideoProcessor},
                                exist_ok=True)


def register_all() -> None:
    """Register every architecture whose folder is installed; a broken folder fails loudly, naming itself."""
    for name in available_architectures():
        try:
            register_architecture(ARCHITECTURES[name])
        except Exception as error:
            raise ImportError(f"hf_fer: could not register architecture {name!r}: {error}") from error
