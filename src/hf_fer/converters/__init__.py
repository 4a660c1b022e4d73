"""Upstream-checkpoint converters, one module per architecture (``convert_<arch>_original``).

They live outside the model folders on purpose: a model folder is copied to the Hub as remote code and
must import nothing but torch/torchvision/transformers and its siblings, while a converter is tooling
that uses ``hf_fer.conversion`` and ``hf_fer.labels``. Driven by ``scripts/convert_original_checkpoint.py``.
"""
