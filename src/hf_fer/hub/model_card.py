"""Model cards rendered from ``hf_fer/hub/templates/<arch>.md`` (package data) with ``huggingface_hub.ModelCard``.

The card's ``model-index`` comes only from ``eval_results.json`` files written by ``hf-fer evaluate``:
no results, no ``model-index``. The Hub's newer ``.eval_results/*.yaml`` files (:func:`eval_results_files`)
hold the same reproduced numbers, each marked ``reproduced by hf_fer``, next to the papers' own numbers for the
same benchmarks, marked ``paper`` (``Architecture.paper_results`` in :mod:`hf_fer.models`); the card's results table shows both side by side. The per-architecture templates hold what is specific to a model
(what it is, how it was published, its citation); the parts every card needs (results, label order,
preprocessing, provenance, limitations, licence) are generated here from the model folder, so they
cannot drift from the checkpoint they describe.
"""
from __future__ import annotations

import importlib.resources
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..models import ARCHITECTURES, CardInfo, PaperResult

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = [
    "BASE_MODEL_RELATIONS",
    "eval_results_files",
    "RESTRICTED_DATASETS",
    "find_template",
    "load_eval_results",
    "weights_license",
    "build_card_data",
    "render_model_card",
]

DEFAULT_TEMPLATE = importlib.resources.files(__package__) / "templates" / "default.md"
TRAINING_INFO_FILES = (
    "recipe.yaml", "recipe.yml", "recipe.json", "training_recipe.yaml", "training_args.json", "training_info.json",
    "training_results.json", "train_results.json", "all_results.json", "trainer_state.json",
)


#: ``base_model_relation`` values the Hub understands.
BASE_MODEL_RELATIONS = ("finetune", "adapter", "merge", "quantized")

#: Benchmarks whose images are distributed for non-commercial research only (weights trained on them inherit that).
RESTRICTED_DATASETS: dict[str, str] = {
    "raf-db": "RAF-DB", "affectnet-7": "AffectNet", "affectnet-8": "AffectNet", "fer2013": "FER2013",
    "ferplus": "FERPlus (FER2013 images)", "sfew": "SFEW", "caer-s": "CAER-S",
}

PERCENT_METRICS = (("accuracy", "Accuracy"), ("mean_class_accuracy", "Mean class accuracy"), ("macro_f1", "Macro-F1"))
# metric key -> (model-index metric type, display name, metric_config)
MODEL_INDEX_METRICS = {
    "accuracy": ("accuracy", "Accuracy", None),
    "mean_class_accuracy": ("balanced_accuracy", "Mean class accuracy", None),
    "macro_f1": ("f1", "Macro-F1", "macro"),
}


def _card_info(arch: str | None) -> CardInfo | None:
    """The registry's card facts of ``arch`` (None for an unknown architecture: the card stays generic)."""
    entry = ARCHITECTURES.get(arch or "")
    return entry.card if entry is not None else None


def find_template(arch: str | None, template: str | os.PathLike | None = None) -> Traversable:
    """The card template: an explicit path, the architecture's own (package data, see ``Architecture.card_template``),
    or the generic fallback."""
    if template is not None:
        path = Path(template)
        if not path.is_file():
            raise FileNotFoundError(f"--template {template}: file not found")
        return path
    entry = ARCHITECTURES.get(arch or "")
    own = entry.card_template if entry is not None else None
    return own if own is not None else DEFAULT_TEMPLATE


def load_eval_results(sources: Sequence[str | os.PathLike | Mapping]) -> list[dict]:
    """Read ``eval_results.json`` files (or accept already-loaded dicts); check they hold what a card needs."""
    results = []
    for source in sources:
        if isinstance(source, Mapping):
            data, where = dict(source), "eval results"
        else:
            where = str(source)
            try:
                data = json.loads(Path(source).read_text())
            except FileNotFoundError:
                raise FileNotFoundError(f"eval results file not found: {source}") from None
            except json.JSONDecodeError as error:
                raise ValueError(f"{source}: not valid JSON ({error})") from None
            data["_folder"] = str(Path(source).parent)
        metrics = data.get("metrics")
        if not isinstance(metrics, Mapping):
            raise ValueError(f"{where}: field 'metrics' missing; expected the output of `hf-fer evaluate`")
        for key, _ in PERCENT_METRICS:
            if not isinstance(metrics.get(key), (int, float)):
                raise ValueError(f"{where}: field 'metrics.{key}' must be a number, got {metrics.get(key)!r}")
        for key in ("split", "dataset_name"):
            if not data.get(key):
                raise ValueError(f"{where}: field {key!r} missing")
        results.append(data)
    return results


def weights_license(arch: str | None, training_dataset: str | None, converted: bool) -> dict:
    """Licence metadata of the *weights*: the code is Apache-2.0, but weights inherit their data's terms.

    Returns ``{"license", "license_name", "license_link", "explanation"}``.
    """
    info = _card_info(arch)
    key = _benchmark_key_of(training_dataset)
    if key in RESTRICTED_DATASETS:
        name = RESTRICTED_DATASETS[key]
        slug = re.sub(r"[^a-z0-9]+", "-", name.split(" ")[0].lower()).strip("-")
        explanation = (f"The weights were trained on {name}, whose images are distributed for non-commercial research "
                       "under the dataset owners' agreement. The weights inherit those terms: research use only, no commercial "
                       "use. Check the dataset's own agreement before any use.")
        if converted and info is not None and info.upstream_license is None:
            explanation += f" They were also converted from a checkpoint of {info.upstream_code}, which carries no licence."
        return {"license": "other", "license_name": f"{slug}-research-only", "license_link": "LICENSE", "explanation": explanation}
    if converted and info is not None and info.upstream_license is None:
        return {
            "license": "other", "license_name": "upstream-unlicensed", "license_link": "LICENSE",
            "explanation": f"The weights were converted from a checkpoint of {info.upstream_code}, which carries no licence "
            "(all rights reserved by its authors). Ask them before redistributing or using these weights.",
        }
    if key != "synthetic":
        return {
            "license": "other", "license_name": "unknown-training-data", "license_link": "LICENSE",
            "explanation": (f"The weights were trained on {training_dataset}, whose terms hf_fer does not know" if training_dataset
                            else "The training data of these weights is not recorded, so their terms are unknown")
            + ". Treat them as research-only until you know the terms of that data (pass --training-dataset to name a benchmark).",
        }
    return {
        "license": "apache-2.0", "license_name": None, "license_link": None,
        "explanation": "The weights were trained by hf_fer on its own synthetic cartoon faces only and are released under "
        "Apache-2.0, like the code.",
    }


def _benchmark_key_of(dataset: str | None) -> str:
    """``"synthetic"``, a benchmark key (also from a folder name such as ``data/rafdb``), or ``""`` when unknown."""
    if not dataset:
        return ""
    text = str(dataset).strip().lower()
    if text == "synthetic":
        return text
    from ..labels import _benchmark_key

    for candidate in (text, Path(text).name, Path(text).name.replace("_", "-")):
        try:
            return _benchmark_key(candidate)
        except KeyError:
            continue
    return ""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-").lower() or "dataset"


def build_card_data(
    config: Mapping,
    eval_results: Sequence[dict],
    *,
    model_name: str,
    license_info: dict,
    base_model: str | None = None,
    base_model_relation: str | None = None,
    datasets: Sequence[str] | None = None,
) -> ModelCardData:
    """``ModelCardData`` (YAML metadata) with a ``model-index`` built only from ``eval_results`` (single-view numbers)."""
    if base_model_relation is not None and base_model_relation not in BASE_MODEL_RELATIONS:
        raise ValueError(f"--base-model-relation must be one of {BASE_MODEL_RELATIONS}, got {base_model_relation!r}")
    evals = []
    for result in eval_results:
        dataset_type = result.get("benchmark") or _slug(result["dataset_name"])
        protocol = (result.get("protocol") or {}).get("name")
        for key, (metric_type, metric_name, metric_config) in MODEL_INDEX_METRICS.items():
            evals.append(EvalResult(
                task_type="image-classification", task_name="Facial expression recognition",
                dataset_type=dataset_type, dataset_name=result["dataset_name"], dataset_split=result["split"],
                dataset_args={"protocol": protocol} if protocol else None,
                metric_type=metric_type, metric_name=metric_name, metric_config=metric_config,
                metric_value=round(float(result["metrics"][key]), 4),
            ))
    arch = config.get("model_type")
    tags = ["hf_fer", "facial-expression-recognition", "image-classification", "custom_code"] + ([arch] if arch else [])
    return ModelCardData(
        model_name=model_name,
        eval_results=evals or None,
        library_name="transformers",
        pipeline_tag="image-classification",
        license=license_info["license"],
        license_name=license_info.get("license_name"),
        license_link=license_info.get("license_link"),
        tags=tags,
        metrics=["accuracy", "balanced_accuracy", "f1"] if evals else None,
        base_model=base_model,
        datasets=list(datasets) if datasets else None,
        **({"base_model_relation": base_model_relation} if base_model and base_model_relation else {}),
    )


# ---------------------------------------------------------------------------------------------
# Card sections generated from the model folder
# ---------------------------------------------------------------------------------------------


def _percent(value: float) -> str:
    return f"{100 * float(value):.2f}"


def _ci_text(result_row: Mapping, key: str) -> str:
    interval = (result_row.get("confidence_intervals") or {}).get(key)
    return f"{_percent(interval['low'])}–{_percent(interval['high'])}" if interval else "–"


def _protocol_name(result: Mapping) -> str:
    return (result.get("protocol") or {}).get("name") or "–"


def paper_comparison_rows(arch: str | None, eval_results: Sequence[dict]) -> list[tuple[PaperResult, dict]]:
    """(paper number, reproduced result) pairs for the benchmarks this checkpoint was evaluated on (test splits)."""
    entry = ARCHITECTURES.get(arch or "")
    papers = {paper.benchmark: paper for paper in (entry.paper_results if entry is not None else ())}
    return [(papers[result["benchmark"]], result) for result in eval_results
            if result.get("benchmark") in papers and result.get("split") == "test"]


def results_section(eval_results: Sequence[dict], image_paths: Sequence[str | None], arch: str | None = None) -> str:
    if not eval_results:
        return (
            "No evaluation results are attached to this checkpoint, so this card has no `model-index` metadata. "
            "Measure it with `hf-fer evaluate --model <this repo> --dataset <data>` before relying on it."
        )
    lines = [
        "Measured with `hf-fer evaluate` on the split named below (values in %). Accuracy is correct/total; mean class "
        "accuracy is the mean of the confusion matrix diagonal (what many FER papers call \"average accuracy\"). "
        "Intervals are 95 % bootstrap intervals over the test images; ECE is the expected calibration error (15 bins). "
        "Protocol `hf_fer` is batch-independent; `paper` reproduces the upstream evaluation. Test-time augmentation, "
        "when measured, is its own row.",
        "",
        "| dataset | split | protocol | views | images | accuracy | 95 % CI | mean class accuracy | macro-F1 | ECE |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in eval_results:
        metrics = result["metrics"]
        ece = result.get("ece")
        lines.append(
            f"| {result['dataset_name']} | {result['split']} | {_protocol_name(result)} | single | {result.get('num_samples', '?')} "
            f"| {_percent(metrics['accuracy'])} | {_ci_text(result, 'accuracy')} "
            f"| {_percent(metrics['mean_class_accuracy'])} | {_percent(metrics['macro_f1'])} | {_percent(ece) if ece is not None else '–'} |"
        )
        tta = result.get("tta_results")
        if tta:
            tta_ece = tta.get("ece")
            lines.append(
                f"| {result['dataset_name']} | {result['split']} | {_protocol_name(result)} | {tta['mode']} TTA | {result.get('num_samples', '?')} "
                f"| {_percent(tta['metrics']['accuracy'])} | {_ci_text(tta, 'accuracy')} | {_percent(tta['metrics']['mean_class_accuracy'])} "
                f"| {_percent(tta['metrics']['macro_f1'])} | {_percent(tta_ece) if tta_ece is not None else '–'} |"
            )
    pairs = paper_comparison_rows(arch, eval_results)
    if pairs:
        lines += ["", "**Paper vs reproduced** (overall accuracy, %, test split):", "",
                  "| benchmark | paper | source | reproduced by hf_fer | 95 % CI | protocol |", "|---|---|---|---|---|---|"]
        for paper, result in pairs:
            lines.append(f"| {result['dataset_name']} | {paper.accuracy:.2f} | {paper.source}" + (f"; {paper.protocol}" if paper.protocol else "")
                         + f" | {_percent(result['metrics']['accuracy'])} | {_ci_text(result, 'accuracy')} | {_protocol_name(result)} |")
    for result, image in zip(eval_results, image_paths):
        mapping = result.get("label_mapping") or {}
        notes = []
        if mapping and not mapping.get("identity", True):
            notes.append(f"cross-dataset evaluation, classes matched by name: {mapping.get('description', '')}")
            if mapping.get("unmapped_samples_dropped"):
                notes.append(f"{mapping['unmapped_samples_dropped']} test images of classes the model cannot predict were left out")
        if result.get("num_skipped_images"):
            notes.append(f"{result['num_skipped_images']} unreadable images were skipped")
        synthetic = result.get("synthetic")
        if synthetic:
            notes.append(f"synthetic faces rendered for this evaluation: {synthetic['num_images']} × {synthetic['image_size']} px, "
                         f"difficulty {synthetic['difficulty']}, seed {synthetic['render_seed']}")
        fingerprint = (result.get("dataset_fingerprint") or {}).get("split_sha256")
        if fingerprint:
            notes.append(f"split SHA-256 `{fingerprint[:16]}…`; checkpoint SHA-256 "
                         f"`{((result.get('checkpoint') or {}).get('sha256') or '?')[:16]}…`")
        per_class = result.get("per_class") or {}
        if per_class or notes or image:
            lines += ["", f"**{result['dataset_name']} ({result['split']})**"]
        for note in notes:
            lines.append(f"- {note}")
        if per_class:
            lines += ["", "| class | precision | recall | F1 | images |", "|---|---|---|---|---|"]
            lines += [
                f"| {name} | {_percent(row['precision'])} | {_percent(row['recall'])} | {_percent(row['f1'])} | {row['support']} |"
                for name, row in per_class.items()
                if row.get("support") or row.get("predicted")  # classes absent from the test data and never predicted say nothing
            ]
        if image:
            lines += ["", f"![Confusion matrix on {result['dataset_name']} {result['split']}]({image})"]
    return "\n".join(lines)


def labels_section(config: Mapping) -> str:
    id2label = config.get("id2label") or {}
    rows = sorted(((int(index), name) for index, name in id2label.items()), key=lambda item: item[0])
    lines = [
        "The model's output index *i* means the class below (`config.id2label`). Benchmarks number their classes "
        "differently; never assume another dataset's order (use `hf_fer.labels.label_mapping` to convert).",
        "",
        "| index | label |",
        "|---|---|",
    ]
    lines += [f"| {index} | {name} |" for index, name in rows]
    return "\n".join(lines)


def preprocessing_section(processor_config: Mapping | None, config: Mapping) -> str:
    if not processor_config:
        return "No `preprocessor_config.json` was found next to the weights."
    size = processor_config.get("size") or {}
    size_text = f"{size.get('height')}×{size.get('width')}" if "height" in size else (", ".join(f"{k}={v}" for k, v in size.items()) or "unchanged")
    resample = processor_config.get("resample")
    resample_names = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
    lines = [
        f"- image processor: `{processor_config.get('image_processor_type', '?')}`",
        f"- resize: {size_text if processor_config.get('do_resize', True) else 'no'}"
        + (f" ({resample_names.get(resample, resample)})" if resample is not None else ""),
    ]
    if processor_config.get("do_center_crop"):
        crop = processor_config.get("crop_size") or {}
        lines.append(f"- center crop: {crop.get('height')}×{crop.get('width')}")
    if processor_config.get("do_rescale", True):
        lines.append(f"- rescale: × {processor_config.get('rescale_factor', 1 / 255):.6g}")
    if processor_config.get("do_normalize", True):
        lines.append(f"- normalize: mean {processor_config.get('image_mean')}, std {processor_config.get('image_std')}")
    lines += [
        "",
        "The model expects **one aligned face crop per image**, as in its training data. The `image-classification` "
        "pipeline does not detect faces: on a whole photo or video frame the prediction is meaningless. Detect and "
        "align faces first (or use crops prepared like the training set).",
    ]
    return "\n".join(lines)


def usage_section(repo_id: str | None) -> str:
    name = repo_id or "path/to/this/model"
    return f"""```python
from transformers import pipeline

# The architecture's code ships with the weights (remote code); pin a commit with revision="..." in production.
classifier = pipeline("image-classification", model="{name}", trust_remote_code=True)
classifier("aligned_face.jpg", top_k=3)
```

With `pip install hf_fer`, `import hf_fer` registers the architecture and `trust_remote_code` is not needed:

```python
import hf_fer
from transformers import AutoImageProcessor, AutoModelForImageClassification

model = AutoModelForImageClassification.from_pretrained("{name}")
processor = AutoImageProcessor.from_pretrained("{name}")
```

From the command line: `hf-fer predict --model {name} faces/ --top-k 3`."""


def _short_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


def provenance_section(provenance: Mapping) -> str:
    lines = []
    if provenance.get("converted_from"):
        record = provenance.get("conversion") or {}
        details = [
            text for key, text in (
                ("source", f"from {record.get('source')}"),
                ("sha256", f"SHA-256 `{record.get('sha256')}`"),
                ("container_key", f"weights under `{record.get('container_key')}`"),
                ("epoch", f"epoch {_short_value(record.get('epoch'))}"),
                ("best_acc", f"upstream best accuracy {_short_value(record.get('best_acc'))}"),
                ("hf_fer_version", f"converted with hf_fer {record.get('hf_fer_version')}"),
            ) if record.get(key) is not None
        ]
        lines.append(f"- converted from the upstream checkpoint `{provenance['converted_from']}`"
                     + (f" ({'; '.join(details)})" if details else "")
                     + " with `hf-fer convert` (`scripts/convert_original_checkpoint.py`); logits match the upstream code")
    if provenance.get("training_dataset"):
        lines.append(f"- training data: {provenance['training_dataset']}")
    if provenance.get("base_model"):
        lines.append(f"- fine-tuned from: `{provenance['base_model']}`")
    for name, summary in provenance.get("training_files", {}).items():
        lines.append(f"- training record `{name}`" + (f": {summary}" if summary else ""))
    if provenance.get("commit"):
        lines.append(f"- hf_fer commit: `{provenance['commit']}`")
    if provenance.get("versions"):
        lines.append("- software: " + ", ".join(f"{k} {v}" for k, v in provenance["versions"].items()))
    if not lines:
        lines.append("- no training or conversion record was found next to the weights")
    return "\n".join(lines)


LIMITATIONS = """- **What the output means.** The model assigns one of a fixed set of labels to the *appearance* of a face. A facial
  configuration is not a reliable readout of what a person feels: the same expression means different things in
  different people, cultures and situations, and people often feel something without showing it. Do not use the
  output as evidence of anyone's emotional state, honesty, intent, personality or health.
- **Bias.** FER benchmarks are web images annotated by crowd workers. They under-represent many ages, skin tones,
  cultures and disabilities, the annotators' own cultural reading is baked into the labels, and accuracy is known to
  differ between demographic groups. This checkpoint has not been audited for such gaps; measure them on data from
  the people you intend to apply it to.
- **Consent.** The people in these datasets did not, in general, consent to having their faces used to train
  expression classifiers. Analysing the faces of people who have not agreed to it, such as in surveillance, hiring,
  workplace or classroom monitoring, policing, border control, insurance or advertising, is inappropriate, and
  emotion recognition in workplaces and schools is prohibited in the EU under the AI Act (with narrow medical and
  safety exceptions).
- **Input.** One aligned face crop per image, preprocessed as described above. Whole frames, unusual crops,
  occlusion, extreme pose or lighting, and low resolution all degrade the prediction without warning.
- **Labels.** Class order is dataset specific (see the table above). Results on one benchmark do not transfer to
  another; evaluate on data like yours.
- **Not for** medical, psychological or legal decisions, or any decision with consequences for the person in the image."""


def license_section(arch: str | None, license_info: Mapping) -> str:
    info = _card_info(arch)
    lines = ["- code: the hf_fer implementation (shipped here as remote code) is Apache-2.0. It was written from the "
             "paper and a description of the upstream code; no upstream code was copied."]
    if info is not None:
        upstream = info.upstream_license or "no licence (all rights reserved by the authors)"
        lines.append(f"- upstream code ({info.upstream_code}): {upstream}")
    lines.append(f"- weights: `{license_info['license']}`" + (f" (`{license_info['license_name']}`)" if license_info.get("license_name") else "")
                 + f". {license_info['explanation']}")
    return "\n".join(lines)


def license_file_text(arch: str | None, license_info: Mapping, model_name: str) -> str:
    """The ``LICENSE`` file uploaded next to the weights when the metadata says ``license: other``."""
    return (
        f"Terms of {model_name}\n\n"
        + license_section(arch, license_info).replace("- ", "* ")
        + "\n\nThe full Apache-2.0 text: https://www.apache.org/licenses/LICENSE-2.0\n"
    )


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def _training_files(model_dir: Path) -> dict[str, str]:
    """Training records found next to the weights, each with a one-line summary of the keys people look for."""
    found = {}
    for name in TRAINING_INFO_FILES:
        path = model_dir / name
        if not path.is_file():
            continue
        data = None
        try:
            if name.endswith(".json"):
                data = json.loads(path.read_text())
            else:
                import yaml

                data = yaml.safe_load(path.read_text())
        except Exception:  # a record we cannot parse is still listed
            data = None
        summary = []
        if isinstance(data, Mapping):
            flat = dict(data)
            nested = [data] + ([data["recipe_values"]] if isinstance(data.get("recipe_values"), Mapping) else [])
            for source in nested:
                for section in ("data", "training", "model"):
                    if isinstance(source.get(section), Mapping):
                        flat.update({f"{section}.{k}": v for k, v in source[section].items()})
                if isinstance(source.get("training"), Mapping) and isinstance(source["training"].get("optimizer"), Mapping):
                    flat.update({f"optimizer.{k}": v for k, v in source["training"]["optimizer"].items()})
            if "results" in name:  # outcomes only; the settings are summarised from the info/recipe files
                keys = ("best_epoch", "best_validation_accuracy", "best_validation_mean_class_accuracy", "global_step",
                        "train_seconds", "best_metric", "eval_accuracy")
            else:
                keys = ("recipe", "dataset", "data.dataset", "model.arch", "epochs", "training.epochs", "training.max_steps",
                        "num_train_epochs", "seed", "training.seed", "optimizer.name", "optimizer.lr", "learning_rate",
                        "batch_size", "training.batch_size", "train_samples")
            for key in keys:
                if flat.get(key) is not None and not isinstance(flat[key], (Mapping, list)):
                    summary.append(f"{key}={_short_value(flat[key])}")
        found[name] = ", ".join(summary)
    return found


def _training_dataset_from_records(model_dir: Path, config: Mapping) -> str | None:
    if config.get("hf_fer_dataset"):
        return str(config["hf_fer_dataset"])
    for name in ("training_info.json", "training_args.json", "train_results.json", "all_results.json"):
        data = _read_json(model_dir / name) if (model_dir / name).is_file() else None
        if isinstance(data, Mapping):
            for key in ("benchmark", "dataset_name", "dataset"):
                if isinstance(data.get(key), str):
                    return data[key]
    return None


_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def _init_from_of_records(model_dir: Path) -> str | None:
    info = _read_json(model_dir / "training_info.json") if (model_dir / "training_info.json").is_file() else None
    model = ((info or {}).get("recipe_values") or {}).get("model") if isinstance(info, Mapping) else None
    value = model.get("init_from") if isinstance(model, Mapping) else None
    return str(value) if value else None


def _card_datasets(training_dataset: str | None, results: Sequence[dict]) -> list[str]:
    """``datasets`` metadata: Hub dataset ids where known, else the benchmark keys (training data first)."""
    names = []
    for candidate in [training_dataset] + [r.get("dataset_hub_id") or r.get("benchmark") for r in results]:
        if not candidate:
            continue
        text = str(candidate)
        value = text if _HUB_ID.fullmatch(text) else _benchmark_key_of(text)
        if value and value not in names:
            names.append(value)
    return names


def _eval_dataset_id(result: Mapping) -> str:
    return result.get("dataset_hub_id") or result.get("benchmark") or _slug(result["dataset_name"])


def eval_results_files(
    eval_results: Sequence[dict],
    arch: str | None,
    *,
    repo_id: str | None = None,
    result_paths: Sequence[str] | None = None,
) -> dict[str, list[dict]]:
    """The Hub's ``.eval_results/*.yaml`` content: ``{file name: entries}``, one file per benchmark result.

    Reproduced results (single view; a TTA row gets its own file) have source "reproduced by hf_fer" linking to the
    uploaded ``eval_results.json``; the paper's number for each evaluated benchmark gets a file with source "paper".
    Each entry is one metric (``task_id``), values in %, built with ``huggingface_hub.EvalResultEntry``.
    """
    from huggingface_hub import EvalResultEntry, eval_result_entries_to_yaml

    info = _card_info(arch)
    files: dict[str, list[dict]] = {}
    result_paths = list(result_paths or ["eval_results.json"] * len(eval_results))
    for result, path in zip(eval_results, result_paths):
        dataset_id = _eval_dataset_id(result)
        protocol = _protocol_name(result)
        rows = [("single view", "", result["metrics"])]
        if result.get("tta_results"):
            rows.append((f"{result['tta_results']['mode']} TTA", f"-tta-{result['tta_results']['mode']}", result["tta_results"]["metrics"]))
        url = f"https://huggingface.co/{repo_id}/blob/main/{path}" if repo_id else None
        for views, suffix, metrics in rows:
            entries = [
                EvalResultEntry(
                    dataset_id=dataset_id, task_id=key, value=round(100 * float(metrics[key]), 2), date=result.get("date"),
                    source_url=url, source_name="reproduced by hf_fer" if url else None,
                    notes=f"reproduced by hf_fer; metric {key} (%); split {result['split']}; protocol {protocol}; {views}; "
                          f"{result.get('num_samples', '?')} images",
                )
                for key, _ in PERCENT_METRICS
            ]
            name = f"{_slug(dataset_id)}-{_slug(result['split'])}-reproduced-{_slug(protocol) if protocol != '–' else 'unrecorded-protocol'}{suffix}.yaml"
            files[name] = eval_result_entries_to_yaml(entries)
    for paper, result in paper_comparison_rows(arch, eval_results):
        url = (info.paper_url or info.upstream_code) if info else None
        entry = EvalResultEntry(
            dataset_id=_eval_dataset_id(result), task_id="accuracy", value=paper.accuracy, date=paper.date,
            source_url=url, source_name="paper" if url else None,
            notes=f"paper: {paper.source}; overall accuracy (%) on the test split as published" + (f"; {paper.protocol}" if paper.protocol else ""),
        )
        files[f"{_slug(paper.benchmark)}-test-paper-reported.yaml"] = eval_result_entries_to_yaml([entry])
    return files


def render_model_card(
    model_dir: str | os.PathLike,
    *,
    eval_results: Sequence[str | os.PathLike | Mapping] | None = None,
    repo_id: str | None = None,
    model_name: str | None = None,
    template: str | os.PathLike | None = None,
    training_dataset: str | None = None,
    converted_from: str | None = None,
    base_model: str | None = None,
    base_model_relation: str | None = None,
    commit: str | None = None,
    image_paths: Sequence[str | None] | None = None,
) -> tuple[ModelCard, dict]:
    """Render the card of a model folder. Returns ``(card, license_info)``.

    ``eval_results`` default to ``<model_dir>/eval_results.json`` when it exists. ``image_paths`` are the
    (repo-relative) confusion-matrix images of each result, as the upload folder will hold them.
    """
    model_dir = Path(model_dir)
    config = _read_json(model_dir / "config.json")
    if config is None:
        raise FileNotFoundError(f"{model_dir}: no config.json; expected a save_pretrained model folder")
    processor_config = _read_json(model_dir / "preprocessor_config.json")
    if eval_results is None:
        default = model_dir / "eval_results.json"
        eval_results = [default] if default.is_file() else []
    results = load_eval_results(eval_results)
    if image_paths is None:
        image_paths = [r.get("files", {}).get("confusion_matrix") for r in results]

    arch = config.get("model_type")
    info = _card_info(arch)
    training_dataset = training_dataset or _training_dataset_from_records(model_dir, config)
    conversion = config.get("hf_fer_converted_from")  # the converter's provenance record (hf_fer.conversion)
    if converted_from is None and conversion:
        converted_from = conversion.get("checkpoint") if isinstance(conversion, Mapping) else str(conversion)
        converted_from = converted_from or f"upstream {conversion.get('arch')} weights"
    license_info = weights_license(arch, training_dataset, converted=bool(converted_from))
    name = model_name or (repo_id.split("/")[-1] if repo_id else model_dir.resolve().name)

    if commit is None:
        from ..evaluation.runner import _git_commit

        commit = _git_commit()
    import torch
    import transformers

    from .. import __version__

    provenance = {
        "converted_from": converted_from,
        "conversion": dict(conversion) if isinstance(conversion, Mapping) else {},
        "training_dataset": training_dataset,
        "base_model": base_model,
        "training_files": _training_files(model_dir),
        "commit": commit,
        "versions": {"hf_fer": __version__, "transformers": config.get("transformers_version") or transformers.__version__, "torch": torch.__version__},
    }
    if base_model is None:  # fine-tuned from a Hub checkpoint (the recipe's model.init_from)
        init_from = _init_from_of_records(model_dir)
        if init_from and _HUB_ID.fullmatch(init_from):
            base_model, base_model_relation = init_from, base_model_relation or "finetune"
            provenance["base_model"] = base_model
    elif base_model_relation is None and not converted_from:
        base_model_relation = "finetune"
    card_data = build_card_data(config, results, model_name=name, license_info=license_info, base_model=base_model,
                                base_model_relation=base_model_relation, datasets=_card_datasets(training_dataset, results) or None)
    card = ModelCard.from_template(
        card_data,
        template_str=find_template(arch, template).read_text(encoding="utf-8"),
        model_name=name,
        repo_id=repo_id,
        arch=arch,
        arch_title=info.title if info else (arch or "model"),
        upstream_code=info.upstream_code if info else None,
        paper_url=info.paper_url if info else None,
        num_labels=len(config.get("id2label") or {}),
        results_section=results_section(results, image_paths, arch),
        labels_section=labels_section(config),
        preprocessing_section=preprocessing_section(processor_config, config),
        usage_section=usage_section(repo_id),
        provenance_section=provenance_section(provenance),
        limitations_section=LIMITATIONS,
        license_section=license_section(arch, license_info),
        training_dataset=training_dataset,
    )
    return card, license_info
