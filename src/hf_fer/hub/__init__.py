"""Publishing: model cards rendered from ``model_cards/<arch>.md`` and ``hf-fer push``."""
from .model_card import ARCH_CARD_INFO, PAPER_RESULTS, build_card_data, eval_results_files, load_eval_results, render_model_card, weights_license
from .push import PushResult, main, prepare_upload_folder, push_to_hub

__all__ = [
    "ARCH_CARD_INFO",
    "PAPER_RESULTS",
    "eval_results_files",
    "build_card_data",
    "load_eval_results",
    "render_model_card",
    "weights_license",
    "PushResult",
    "prepare_upload_folder",
    "push_to_hub",
    "main",
]
