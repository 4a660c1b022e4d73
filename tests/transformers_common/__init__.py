"""transformers' own common test mixins (vendored, Apache-2.0, see LICENSE-transformers) used by hf_fer's model tests."""
