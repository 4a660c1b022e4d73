"""Stand-ins for the parts of transformers' test tree that the 5.24.0 source distribution does not ship.

Written for hf_fer (not copied): the vendored common-test files import them by relative path.
"""
from __future__ import annotations


class ExportTesterMixin:
    """transformers' torch.export tests (tests/exporters) are not in the sdist; hf_fer tests export in tests/test_export.py."""


class GenerationTesterMixin:
    """Marker class only: hf_fer models do not generate."""


# PretrainedConfig arguments every config must accept and keep (non-default values), for
# ConfigTester.check_config_arguments_init.
config_common_kwargs = {
    "return_dict": False,
    "output_hidden_states": True,
    "dtype": "float16",
    "chunk_size_feed_forward": 5,
    "architectures": ["BertModel"],
    "id2label": {0: "label"},
    "label2id": {"label": "0"},
    "problem_type": "regression",
}


def url_to_local_path(url: str) -> str:
    """transformers' CI maps Hub image URLs to pre-fetched files; hf_fer tests run offline and have none."""
    raise RuntimeError(f"hf_fer's common tests run offline: no local copy of {url}")
