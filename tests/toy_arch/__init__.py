"""A tiny throwaway architecture that proves the shared plumbing (registry, converter CLI, harness).

It lives in the tests, not in the package: it follows docs/adding_an_architecture.md exactly like a
real architecture folder (config, model with a sibling building-block file, image processor, converter).
"""
from .configuration_toy import ToyConfig
from .image_processing_toy import ToyImageProcessor
from .modeling_toy import ToyForImageClassification
