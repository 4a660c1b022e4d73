"""Data: the embedded synthetic faces, benchmark readers (raw layouts -> ``datasets``), and loading for training/evaluation."""
from .loading import load_fer_dataset
from .synthetic import make_synthetic_fer

__all__ = ["make_synthetic_fer", "load_fer_dataset", "prepare_dataset"]


def __getattr__(name):  # benchmarks pulls in heavier imports; load it on first use
    if name == "prepare_dataset":
        from .benchmarks import prepare_dataset

        return prepare_dataset
    raise AttributeError(name)
