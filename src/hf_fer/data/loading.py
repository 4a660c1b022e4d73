"""Load a FER dataset for training or evaluation, and check its labels against the model's.

Training and evaluation accept whatever a user has: a dataset written by ``prepare-dataset``
(``save_to_disk``), an ``imagefolder`` directory (``train/<class>/...``), a Hub dataset id, or the
embedded synthetic faces. Whatever the source, the class order of the data must be the class order
of the model (``config.id2label``): an ``imagefolder`` numbers classes alphabetically, RAF-DB starts
with surprise, FER2013 with anger... Evaluating with mismatched orders gives plausible-looking,
wrong numbers, so :func:`load_fer_dataset` compares the names and either remaps the labels by name
(``label_map="auto"``, via :mod:`hf_fer.labels`) or refuses, showing both lists.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from ..labels import benchmark_of, canonical_name, label_mapping

logger = logging.getLogger(__name__)

__all__ = ["DatasetLoadError", "LabelMismatchError", "SYNTHETIC_DEFAULTS", "load_fer_dataset", "check_label_names", "dataset_label_names",
           "check_label_range", "align_split_labels"]

#: Split sizes and rendering options of ``source="synthetic"`` (override with ``synthetic_options``). ``difficulty`` is
#: the held-out splits' (and the training split's unless ``train_difficulty``, a name or a mix, is given).
SYNTHETIC_DEFAULTS: dict[str, Any] = {"num_train": 512, "num_validation": 0, "num_test": 128, "image_size": 112, "seed": 0, "label_space": None,
                                      "difficulty": "standard", "train_difficulty": None}


class DatasetLoadError(ValueError):
    """The dataset source could not be found or loaded."""


class LabelMismatchError(ValueError):
    """The dataset's class names do not match the model's ``id2label``."""


def _looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or os.sep in source.strip("/").replace("/", "", 1) or Path(source).exists()


def _synthetic(id2label: Mapping[int, str] | None, options: Mapping[str, Any] | None) -> datasets.DatasetDict:
    from .synthetic import make_synthetic_fer

    settings = dict(SYNTHETIC_DEFAULTS)
    unknown = set(options or {}) - set(settings)
    if unknown:
        raise ValueError(f"unknown synthetic_options {sorted(unknown)}; expected {sorted(settings)}")
    settings.update(options or {})
    label_space = settings["label_space"]
    if label_space is None:
        # Render the faces in the model's own label space when it is a known benchmark order.
        label_space = (benchmark_of(id2label[i] for i in sorted(id2label)) if id2label else None) or "raf-db"
    splits = {}
    for offset, split in enumerate(("train", "validation", "test")):
        count = int(settings[f"num_{split}"])
        if count > 0:
            # Different seeds per split: the test faces are new identities, not copies of training ones.
            splits[split] = make_synthetic_fer(count, image_size=settings["image_size"], seed=settings["seed"] + 1000 * offset, label_space=label_space,
                                               difficulty=(split == "train" and settings["train_difficulty"]) or settings["difficulty"])
    return datasets.DatasetDict(splits)


def _load_source(source: str, cache_dir: str | None, synthetic_options: Mapping[str, Any] | None, id2label) -> datasets.DatasetDict:
    if source == "synthetic":
        return _synthetic(id2label, synthetic_options)
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.Dataset):  # a single saved split (e.g. saved synthetic faces)
                loaded = datasets.DatasetDict({str(loaded.split or "train"): loaded})
            return loaded
        raw_markers = [m for m in ("EmoLabel", "fer2013.csv", "fer2013new.csv", "training.csv", "train_set") if (path / m).exists()]
        if raw_markers:
            raise DatasetLoadError(
                f"{path} looks like a raw benchmark download ({', '.join(raw_markers)}); convert it first with "
                f"`hf-fer prepare-dataset --benchmark NAME --raw-dir {path} --output OUT` and load OUT"
            )
        try:
            return datasets.load_dataset("imagefolder", data_dir=str(path), cache_dir=cache_dir)
        except Exception as error:
            raise DatasetLoadError(f"could not read {path} as an imagefolder (split/class/image files): {error}") from error
    if path.exists():
        raise DatasetLoadError(f"{path} is a file; expected a dataset directory, an imagefolder directory, a Hub dataset id or 'synthetic'")
    if _looks_like_path(source):
        raise DatasetLoadError(f"dataset directory {source} does not exist")
    try:
        return datasets.load_dataset(source, cache_dir=cache_dir)
    except Exception as error:
        offline = any(os.environ.get(v, "").upper() in ("1", "TRUE", "YES", "ON") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
        hint = " (offline mode is on: HF_HUB_OFFLINE/HF_DATASETS_OFFLINE; only cached Hub datasets can be loaded)" if offline else ""
        raise DatasetLoadError(f"could not load Hub dataset {source!r}{hint}: {type(error).__name__}: {error}") from error


def _label_column(dataset: datasets.DatasetDict) -> str | None:
    """The label column every split has (``label``, or ``labels``), ``None`` when no split has one.

    A column present in some splits but not others is an error naming the split: a test split without labels
    would otherwise fail (or be scored wrongly) only at the end of a training run.
    """
    for name in ("label", "labels"):
        having = [split for split, ds in dataset.items() if name in ds.column_names]
        if having:
            missing = [split for split in dataset if split not in having]
            if missing:
                raise DatasetLoadError(f"split {missing[0]!r} has no {name!r} column (split {having[0]!r} has one); "
                                       f"columns of {missing[0]!r}: {dataset[missing[0]].column_names}")
            return name
    return None


def dataset_label_names(dataset: datasets.Dataset | datasets.DatasetDict, label_column: str = "label") -> list[str]:
    """Ordered class names of a dataset's ``ClassLabel`` column (a clear error when it is not one).

    For a ``DatasetDict`` every split must have the same names in the same order (:func:`load_fer_dataset` aligns
    them): the names of one split are not the meaning of another's indices.
    """
    splits = dataset.items() if isinstance(dataset, datasets.DatasetDict) else [(None, dataset)]
    names: list[str] | None = None
    for split, ds in splits:
        feature = ds.features.get(label_column)
        if not isinstance(feature, datasets.ClassLabel):
            where = f"split {split!r}: " if split is not None else ""
            raise LabelMismatchError(
                f"{where}column {label_column!r} is {feature!r}, not a ClassLabel: its class names cannot be checked against the model; "
                "prepare the data with `hf-fer prepare-dataset` or cast the column to ClassLabel(names=[...])"
            )
        if names is None:
            names = list(feature.names)
        elif list(feature.names) != names:
            raise LabelMismatchError(f"split {split!r} has the label names {list(feature.names)}, another split has {names}; "
                                     "load the data with load_fer_dataset to align them")
    return names or []


def check_label_range(dataset: datasets.DatasetDict, label_column: str = "label", max_rows: int = 5) -> None:
    """Every label of every split is a class index of its ``ClassLabel`` (no -1, no None, nothing >= the class count).

    A bad label otherwise surfaces as ``Target -1 is out of bounds`` after a whole training epoch (test split) or from
    ``np.bincount`` (class-balanced sampler), naming neither the split nor the row. Vectorised over the label column.
    """
    for split, ds in dataset.items():
        feature = ds.features.get(label_column)
        if not isinstance(feature, datasets.ClassLabel) or len(ds) == 0:
            continue
        column = ds.with_format("arrow")[label_column]
        values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)  # nulls become NaN
        bad = np.flatnonzero(~((values >= 0) & (values < feature.num_classes)))
        if len(bad):
            shown = ", ".join(f"{int(row)} ({'None' if np.isnan(values[row]) else int(values[row])})" for row in bad[:max_rows])
            raise DatasetLoadError(
                f"split {split!r}: {len(bad)} of {len(ds)} labels in column {label_column!r} are not class indices 0..{feature.num_classes - 1} "
                f"of {list(feature.names)}; first rows (label): {shown}{' ...' if len(bad) > max_rows else ''}. "
                "Fix or drop these rows (e.g. dataset.filter) before training or evaluating"
            )


def _name_keys(names: list[str]) -> list[str]:
    """Comparable class names: canonical expression names when all of them are, else lower-cased."""
    return _canonical(names) or [str(n).lower() for n in names]


def _relabel(ds: datasets.Dataset, label_column: str, lookup: np.ndarray | None, names: list[str]) -> datasets.Dataset:
    """``ds`` with labels ``lookup[label]`` and ``ClassLabel(names)``; only the label column is rewritten (no image copy)."""
    values = np.asarray(ds.with_format("arrow")[label_column].to_numpy(zero_copy_only=False), dtype=np.int64)
    if lookup is not None:
        values = lookup[values]
    order = ds.column_names
    relabelled = ds.remove_columns(label_column).add_column(label_column, values, feature=datasets.ClassLabel(names=list(names)))
    return relabelled.select_columns(order)


def align_split_labels(dataset: datasets.DatasetDict, label_column: str = "label", reference: str | None = None) -> datasets.DatasetDict:
    """Give every split the class order of the training split (``reference``; default ``train``, else the first one).

    A validation/test split saved with another ``ClassLabel`` order but the same classes is remapped by name (one
    log line says so): used as-is, its indices would mean other classes and every metric, and the model selected on
    them, would be silently wrong. Splits with other class names are an error showing both lists.
    """
    if reference not in dataset:
        reference = "train" if "train" in dataset else next(iter(dataset), None)
    if reference is None or not isinstance(dataset[reference].features.get(label_column), datasets.ClassLabel):
        return dataset
    names = list(dataset[reference].features[label_column].names)
    keys = _name_keys(names)
    aligned = {}
    for split, ds in dataset.items():
        feature = ds.features.get(label_column)
        if not isinstance(feature, datasets.ClassLabel):
            raise LabelMismatchError(f"split {split!r}: column {label_column!r} is {feature!r}, not a ClassLabel like split {reference!r}'s")
        own = list(feature.names)
        if own == names:
            aligned[split] = ds
            continue
        own_keys = _name_keys(own)
        if len(own_keys) != len(keys) or sorted(own_keys) != sorted(keys) or len(set(keys)) != len(keys):
            raise LabelMismatchError(
                f"split {split!r} has other classes than split {reference!r}:\n"
                f"{split} labels: {list(enumerate(own))}\n{reference} labels: {list(enumerate(names))}"
            )
        lookup = None if own_keys == keys else np.asarray([keys.index(key) for key in own_keys], dtype=np.int64)
        if lookup is not None:
            logger.warning("split %r has the class order %s and split %r %s: remapping the labels of %r to the order of %r by name",
                           split, own, reference, names, split, reference)
        aligned[split] = _relabel(ds, label_column, lookup, names)
    return datasets.DatasetDict(aligned)


def _canonical(names: list[str]) -> list[str] | None:
    try:
        return [canonical_name(n) for n in names]
    except KeyError:
        return None


def check_label_names(dataset_names: list[str], model_names: list[str]) -> bool:
    """True when the dataset classes are the model classes in the same order (names canonicalised)."""
    canonical_dataset, canonical_model = _canonical(dataset_names), _canonical(model_names)
    if canonical_dataset is None or canonical_model is None:
        return [n.lower() for n in dataset_names] == [n.lower() for n in model_names]
    return canonical_dataset == canonical_model


def _both_lists(dataset_names: list[str], model_names: list[str]) -> str:
    return f"dataset labels: {list(enumerate(dataset_names))}\nmodel id2label: {list(enumerate(model_names))}"


def _remap(dataset: datasets.DatasetDict, label_column: str, dataset_names: list[str], model_names: list[str], drop_unmapped: bool) -> datasets.DatasetDict:
    if _canonical(dataset_names) is None or _canonical(model_names) is None:
        raise LabelMismatchError("cannot map labels by name: some names are not expression names\n" + _both_lists(dataset_names, model_names))
    mapping = label_mapping(dataset_names, model_names)
    missing = mapping.missing_in_target
    if missing:
        lost = {name for name, target in zip(dataset_names, mapping.source_to_target) if target < 0}
        lost_ids = [i for i, name in enumerate(dataset_names) if name in lost]
        counts = {split: sum(1 for label in ds[label_column] if label in lost_ids) for split, ds in dataset.items()}
        if any(counts.values()) and not drop_unmapped:
            raise LabelMismatchError(
                f"the model has no class for dataset classes {missing} ({counts} examples per split); pass "
                "drop_unmapped=True to leave them out of evaluation\n" + _both_lists(dataset_names, model_names)
            )
        if any(counts.values()):
            logger.warning("dropping %s examples of classes %s the model does not have", counts, missing)
            dataset = dataset.filter(lambda labels: [label not in lost_ids for label in labels], input_columns=label_column, batched=True)
    if mapping.missing_in_source:
        logger.info("model classes %s never occur in the dataset", mapping.missing_in_source)
    lookup = list(mapping.source_to_target)
    features = next(iter(dataset.values())).features.copy()
    features[label_column] = datasets.ClassLabel(names=list(model_names))
    logger.info("remapping dataset labels to the model's order: %s", mapping.describe())
    return dataset.map(lambda labels: {label_column: [lookup[label] for label in labels]}, input_columns=label_column, batched=True, features=features)


def load_fer_dataset(
    source: str | os.PathLike | datasets.Dataset | datasets.DatasetDict,
    *,
    id2label: Mapping[int, str] | None = None,
    label_map: str = "strict",
    split: str | None = None,
    splits: list[str] | None = None,
    drop_unmapped: bool = False,
    cache_dir: str | None = None,
    synthetic_options: Mapping[str, Any] | None = None,
    check_labels: bool = True,
) -> datasets.DatasetDict | datasets.Dataset:
    """Load a FER dataset and make sure its label order is the model's.

    Args:
        source: a directory written by ``prepare-dataset``/``save_to_disk`` (a ``DatasetDict`` or a single
            ``Dataset``), an ``imagefolder`` directory, a Hub dataset id (``"org/name"``), ``"synthetic"``
            (the embedded cartoon faces, rendered in the model's label space when it is a benchmark's), or an
            in-memory ``Dataset``/``DatasetDict`` (only the label check and ``split`` apply).
        id2label: the model's ``config.id2label``. ``None`` skips the label check.
        label_map: ``"strict"``: the dataset's class names must equal the model's, in the same order
            (spellings such as ``"Happy"``/``"happiness"`` are canonicalised), otherwise
            :class:`LabelMismatchError` shows both lists. ``"auto"``: labels are remapped by name into the
            model's order (the label column becomes ``ClassLabel(names=model names)``).
        split: return only this split (a ``Dataset``) instead of the ``DatasetDict``.
        splits: keep (and check) only these splits, those present; the first (the training split) must exist
            and gives the class order of the others. Training passes its train/validation/test splits, so an
            unlabelled split it does not use is no error.
        drop_unmapped: with ``label_map="auto"``, drop examples of classes the model lacks (e.g. contempt
            when evaluating a 7-class model on AffectNet-8) instead of raising; a warning gives counts.
        cache_dir: ``datasets`` cache directory for imagefolder / Hub loading.
        synthetic_options: overrides of :data:`SYNTHETIC_DEFAULTS` for ``source="synthetic"``.
        check_labels: ``False`` for callers that read only the images (batch prediction, export calibration): an
            unlabelled split (labels -1, as Hub test splits often have) is then no error and labels are left as they are.

    The label column is ``label`` (a ``labels`` column is renamed to ``label``) and must be a ``ClassLabel``. Every
    split's labels must be class indices (:func:`check_label_range`), and every split gets the training split's class
    order (:func:`align_split_labels`).
    """
    if label_map not in ("strict", "auto"):
        raise ValueError(f"label_map must be 'strict' or 'auto', got {label_map!r}")
    if isinstance(source, datasets.DatasetDict):
        dataset = source
    elif isinstance(source, datasets.Dataset):
        dataset = datasets.DatasetDict({str(source.split or "train"): source})
    else:
        dataset = _load_source(str(source), cache_dir, synthetic_options, id2label)
    if split is not None and split not in dataset:
        raise DatasetLoadError(f"split {split!r} not found in {source}; available splits: {list(dataset)}")
    if split is not None:
        dataset = datasets.DatasetDict({split: dataset[split]})
    reference = None
    if splits:
        reference = splits[0]
        if reference not in dataset:
            raise DatasetLoadError(f"split {reference!r} not found in {source}; available splits: {list(dataset)}")
        dataset = datasets.DatasetDict({name: dataset[name] for name in dict.fromkeys(splits) if name in dataset})
    label_column = _label_column(dataset)
    if label_column == "labels":  # one name downstream: training, evaluation and the samplers read `label`
        dataset = dataset.rename_column("labels", "label")
        label_column = "label"
    if label_column is not None and check_labels:
        check_label_range(dataset, label_column)
        dataset = align_split_labels(dataset, label_column, reference)
    if id2label is not None:
        if label_column is None:
            first = next(iter(dataset.values()))
            raise DatasetLoadError(f"no 'label' column; columns are {first.column_names}")
        model_names = [id2label[i] if i in id2label else id2label[str(i)] for i in sorted(int(k) for k in id2label)]
        dataset_names = dataset_label_names(dataset, label_column)
        if not check_label_names(dataset_names, model_names):
            if label_map == "strict":
                raise LabelMismatchError(
                    f"the label names of {source} do not match the model's id2label (pass label_map='auto' to remap by name)\n"
                    + _both_lists(dataset_names, model_names)
                )
            dataset = _remap(dataset, label_column, dataset_names, model_names, drop_unmapped)
    return dataset[split] if split is not None else dataset
