"""Label spaces of the FER benchmarks, and mappings between them.

Every benchmark numbers its classes differently (RAF-DB starts with surprise, AffectNet with neutral,
FER2013 with anger...). Silent class-order mismatches are the most damaging bug in this field, so the
ordered class names live here, once, and everything else (configs' ``id2label``, dataset builders,
cross-dataset evaluation, F-PDLS priors) asks this module. Never hard-code a class index elsewhere.

Canonical names are lower-case English nouns::

    neutral, happiness, sadness, surprise, fear, disgust, anger, contempt
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

__all__ = [
    "CANONICAL_NAMES",
    "BENCHMARKS",
    "get_label_names",
    "benchmark_key",
    "id2label",
    "label2id",
    "canonical_name",
    "LabelMapping",
    "label_mapping",
]

CANONICAL_NAMES: tuple[str, ...] = ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt")

# Index order of each benchmark, as its own files number the classes (sources: shared/specs/*.md).
BENCHMARKS: dict[str, tuple[str, ...]] = {
    # RAF-DB basic, EmoLabel/list_patition_label.txt labels 1..7 minus one (arm.md §10, poster_v2.md §9).
    "raf-db": ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"),
    # AffectNet official expression ids 0..6 (training.csv/validation.csv), contempt (7) dropped.
    "affectnet-7": ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger"),
    # AffectNet official expression ids 0..7 (8-10 = none/uncertain/no-face are not classes).
    "affectnet-8": ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt"),
    # fer2013.csv `emotion` column: 0 Angry, 1 Disgust, 2 Fear, 3 Happy, 4 Sad, 5 Surprise, 6 Neutral.
    "fer2013": ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"),
    # FERPlus fer2013new.csv vote columns (unknown and NF are not classes) (vt_nr.md §11).
    "ferplus": ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"),
    # SFEW and CAER-S ship class folders, loaded in alphabetical folder order
    # (Angry/Anger, Disgust, Fear, Happy, Neutral, Sad, Surprise) (poster_v2.md §9).
    "sfew": ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"),
    "caer-s": ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"),
}

# Spellings met in folder names, CSV headers, confusion-matrix abbreviations and peer libraries.
_ALIASES: dict[str, str] = {
    "neutral": "neutral", "ne": "neutral", "neu": "neutral", "calm": "neutral",
    "happiness": "happiness", "happy": "happiness", "ha": "happiness", "hap": "happiness", "joy": "happiness",
    "sadness": "sadness", "sad": "sadness", "sa": "sadness",
    "surprise": "surprise", "surprised": "surprise", "su": "surprise", "sur": "surprise",
    "fear": "fear", "fearful": "fear", "fe": "fear", "afraid": "fear", "scared": "fear",
    "disgust": "disgust", "disgusted": "disgust", "di": "disgust", "dis": "disgust",
    "anger": "anger", "angry": "anger", "an": "anger", "ang": "anger",
    "contempt": "contempt", "contemptuous": "contempt", "co": "contempt", "con": "contempt",
}

# Alternative spellings of the benchmark keys.
_BENCHMARK_ALIASES = {
    "rafdb": "raf-db", "raf_db": "raf-db", "raf": "raf-db",
    "affectnet7": "affectnet-7", "affectnet_7": "affectnet-7",
    "affectnet8": "affectnet-8", "affectnet_8": "affectnet-8",
    "fer-2013": "fer2013", "fer_2013": "fer2013",
    "fer-plus": "ferplus", "fer+": "ferplus", "fer_plus": "ferplus",
    "caer_s": "caer-s", "caers": "caer-s",
}


def benchmark_key(benchmark: str) -> str:
    """The canonical key of a benchmark name or alias (``"RAF-DB"``, ``"rafdb"`` → ``"raf-db"``); ``KeyError`` if unknown."""
    key = benchmark.strip().lower()
    key = _BENCHMARK_ALIASES.get(key, key)
    if key not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {benchmark!r}; expected one of {sorted(BENCHMARKS)}")
    return key


def get_label_names(benchmark: str) -> list[str]:
    """Ordered canonical class names of ``benchmark`` (index ``i`` is the benchmark's class ``i``)."""
    return list(BENCHMARKS[benchmark_key(benchmark)])


def id2label(benchmark: str) -> dict[int, str]:
    """``{index: name}`` for a model config trained on ``benchmark``."""
    return dict(enumerate(get_label_names(benchmark)))


def label2id(benchmark: str) -> dict[str, int]:
    """``{name: index}`` for a model config trained on ``benchmark``."""
    return {name: index for index, name in enumerate(get_label_names(benchmark))}


def canonical_name(raw: str) -> str:
    """Map a raw class name ("Angry", "HAPPY", "SU", "sad") to its canonical name, or raise ``KeyError``."""
    key = str(raw).strip().lower().replace("_", " ").replace("-", " ")
    key = key.split(" ")[-1] if key not in _ALIASES and " " in key else key  # "1 surprise", "class angry"
    if key in _ALIASES:
        return _ALIASES[key]
    raise KeyError(f"unknown expression name {raw!r}; known names: {', '.join(CANONICAL_NAMES)} (and common spellings)")


def _names_of(space: str | Sequence[str] | Mapping[int, str]) -> list[str]:
    """Accept a benchmark key, an ordered list of names, or an ``id2label`` dict; return canonical names."""
    if isinstance(space, str):
        return get_label_names(space)
    if isinstance(space, Mapping):
        indices = sorted(int(k) for k in space)
        if indices != list(range(len(indices))):
            raise ValueError(f"id2label indices must be 0..{len(indices) - 1}, got {indices}")
        space = [space[k] if k in space else space[str(k)] for k in indices]
    names = [canonical_name(n) for n in space]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate class names in label space {list(space)}")
    return names


@dataclass(frozen=True)
class LabelMapping:
    """Index remapping from a source label space to a target label space.

    ``source_to_target[i]`` is the target index of source class ``i`` or ``-1`` when the target space
    has no such class (listed in :attr:`missing_in_target`; never guessed). ``target_to_source`` is
    the reverse (``-1`` for :attr:`missing_in_source`).
    """

    source_names: tuple[str, ...]
    target_names: tuple[str, ...]
    source_to_target: tuple[int, ...] = field(init=False)
    target_to_source: tuple[int, ...] = field(init=False)

    def __post_init__(self):
        target_index = {n: i for i, n in enumerate(self.target_names)}
        source_index = {n: i for i, n in enumerate(self.source_names)}
        object.__setattr__(self, "source_to_target", tuple(target_index.get(n, -1) for n in self.source_names))
        object.__setattr__(self, "target_to_source", tuple(source_index.get(n, -1) for n in self.target_names))

    @property
    def missing_in_target(self) -> list[str]:
        """Source classes the target space does not have (their samples cannot be mapped)."""
        return [n for n, t in zip(self.source_names, self.source_to_target) if t < 0]

    @property
    def missing_in_source(self) -> list[str]:
        """Target classes the source space does not have (a source model can never predict them)."""
        return [n for n, s in zip(self.target_names, self.target_to_source) if s < 0]

    @property
    def is_identity(self) -> bool:
        return self.source_names == self.target_names

    def map_labels(self, labels, *, unmapped: str = "raise"):
        """Map source-space label indices to the target space.

        ``unmapped``: ``"raise"`` (default) errors on a label whose class the target lacks, naming it;
        ``"-1"`` returns ``-1`` for those (so callers can drop them and report how many).
        Accepts an int, a sequence of ints, a numpy array or a tensor; returns the same kind.
        """
        if unmapped not in ("raise", "-1"):
            raise ValueError(f"unmapped must be 'raise' or '-1', got {unmapped!r}")
        lookup = torch.tensor(self.source_to_target, dtype=torch.long)
        if isinstance(labels, int):
            return int(self.map_labels(torch.tensor([labels]), unmapped=unmapped)[0])
        as_tensor = torch.as_tensor(labels, dtype=torch.long)
        if as_tensor.numel() and (as_tensor.min() < 0 or as_tensor.max() >= len(self.source_names)):
            raise ValueError(f"labels must be in 0..{len(self.source_names) - 1}, got values {sorted(set(as_tensor.tolist()))}")
        mapped = lookup[as_tensor]
        if unmapped == "raise" and (mapped < 0).any():
            bad = sorted({self.source_names[i] for i in as_tensor[mapped < 0].tolist()})
            raise ValueError(f"classes {bad} have no counterpart in the target label space {list(self.target_names)}")
        if isinstance(labels, torch.Tensor):
            return mapped
        try:
            import numpy as np

            if isinstance(labels, np.ndarray):
                return mapped.numpy()
        except ImportError:  # pragma: no cover
            pass
        return mapped.tolist()

    def map_logits(self, logits: torch.Tensor, *, fill_value: float = float("-inf")) -> torch.Tensor:
        """Re-order source-space logits ``[..., S]`` into the target space ``[..., T]``.

        Target classes the source model lacks get ``fill_value`` (``-inf``: probability 0 after softmax);
        source classes the target lacks are dropped (see :attr:`missing_in_target`).
        """
        if logits.shape[-1] != len(self.source_names):
            raise ValueError(f"logits have {logits.shape[-1]} classes, the source label space has {len(self.source_names)}")
        index = torch.tensor([max(s, 0) for s in self.target_to_source], device=logits.device)
        out = logits.index_select(-1, index)
        missing = torch.tensor([s < 0 for s in self.target_to_source], device=logits.device)
        if missing.any():
            out = out.masked_fill(missing, fill_value)
        return out

    def describe(self) -> str:
        """One paragraph for logs and CLI output."""
        if self.is_identity:
            return f"label spaces identical ({', '.join(self.source_names)})"
        text = "source order " + ", ".join(self.source_names) + " -> target order " + ", ".join(self.target_names)
        if self.missing_in_target:
            text += f"; not in target (cannot be mapped): {', '.join(self.missing_in_target)}"
        if self.missing_in_source:
            text += f"; not in source (never predicted): {', '.join(self.missing_in_source)}"
        return text


def label_mapping(source: str | Sequence[str] | Mapping[int, str], target: str | Sequence[str] | Mapping[int, str]) -> LabelMapping:
    """Build a :class:`LabelMapping` between two label spaces.

    Each side is a benchmark key (``"raf-db"``), an ordered list of class names, or an ``id2label``
    dict; names are canonicalised (``"Angry"`` → ``"anger"``).

    >>> m = label_mapping("raf-db", "fer2013")
    >>> m.map_labels([0, 6])          # surprise, neutral in RAF-DB order
    [5, 6]
    """
    return LabelMapping(tuple(_names_of(source)), tuple(_names_of(target)))


def same_label_space(a: str | Sequence[str] | Mapping[int, str], b: str | Sequence[str] | Mapping[int, str]) -> bool:
    """True when both spaces hold the same classes in the same order."""
    return _names_of(a) == _names_of(b)


def benchmark_of(names: Iterable[str]) -> str | None:
    """The benchmark key whose order ``names`` follows exactly, if any (several share an order: first wins)."""
    canon = tuple(canonical_name(n) for n in names)
    for key, order in BENCHMARKS.items():
        if order == canon:
            return key
    return None


_benchmark_key = benchmark_key  # backwards-compatible private alias
