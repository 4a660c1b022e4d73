"""Publishing: model cards rendered from the package's ``templates/<arch>.md`` and ``hf-fer push``.

Per-architecture facts the card states (upstream code, licence, the papers' numbers) live in the architecture
registry, :data:`hf_fer.models.ARCHITECTURES`.
"""
from .model_card import build_card_data, eval_results_files, find_template, load_eval_results, render_model_card, weights_license
from .push import PushResult, main, prepare_upload_folder, push_to_hub

__all__ = [
    "eval_results_files",
    "build_card_data",
    "find_template",
    "load_eval_results",
    "render_model_card",
    "weights_license",
    "PushResult",
    "prepare_upload_folder",
    "push_to_hub",
    "main",
]
