"""``hf-fer push`` / ``scripts/push_to_hub.py``: publish a model folder with its card.

Everything that would be uploaded is first assembled in one folder: weights (safetensors only), configs, image
processor, the architecture's code with ``auto_map`` (so the repo loads with ``trust_remote_code=True`` without
hf_fer installed), evaluation results and plots, training records, the rendered card and, when the weights
have restricted terms, a ``LICENSE``. ``--to-folder DIR`` stops there and leaves that folder in ``DIR``; otherwise
it is uploaded with ``huggingface_hub.upload_folder``. The upload therefore is exactly what the offline tests check.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .model_card import BASE_MODEL_RELATIONS, TRAINING_INFO_FILES, eval_results_files, license_file_text, load_eval_results, render_model_card

__all__ = ["PushResult", "prepare_upload_folder", "push_to_hub", "build_parser", "main"]

CONFIG_FILES = ("config.json", "preprocessor_config.json", "processor_config.json", "model.safetensors.index.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".tar")


@dataclass
class PushResult:
    folder: Path
    files: list[str]
    skipped: list[str] = field(default_factory=list)
    license: dict = field(default_factory=dict)
    url: str | None = None


def _check_results_are_of_this_model(results: list[dict], model_dir: Path) -> None:
    """Refuse results measured on other weights or another architecture (e.g. an ``eval_results.json`` left in a
    folder that was converted or trained again): a card must never publish one model's numbers under another."""
    from ..evaluation.provenance import checkpoint_hashes

    model_type = json.loads((model_dir / "config.json").read_text()).get("model_type")
    current = checkpoint_hashes(str(model_dir))["files"]
    for result in results:
        where = result.get("_folder") and f"{result['_folder']}/eval_results.json" or "eval results"
        if result.get("model_type") and model_type and result["model_type"] != model_type:
            raise ValueError(f"{where}: measured on a {result['model_type']!r} model, but {model_dir} holds a "
                             f"{model_type!r} model; run `hf-fer evaluate` on this model (or leave these results out)")
        measured = (result.get("checkpoint") or {}).get("files")
        if isinstance(measured, dict) and measured and measured != current:
            shown = ", ".join(f"{name} {digest[:12]}..." for name, digest in sorted(measured.items()))
            now = ", ".join(f"{name} {digest[:12]}..." for name, digest in sorted(current.items()))
            raise ValueError(f"{where}: measured on other weights ({shown}) than {model_dir} holds ({now}); run "
                             "`hf-fer evaluate` on this model (or leave these results out)")


def _auto_map_complete(model_dir: Path) -> bool:
    """``config.json`` and ``preprocessor_config.json`` both carry an ``auto_map`` whose code files are present."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
        processor = json.loads((model_dir / "preprocessor_config.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    config_map = config.get("auto_map") or {}
    processor_map = processor.get("auto_map") or {}
    if not {"AutoConfig", "AutoModelForImageClassification"} <= set(config_map) or "AutoImageProcessor" not in processor_map:
        return False
    references = list(config_map.values()) + [processor_map["AutoImageProcessor"]]
    modules = set()
    for reference in references:
        for item in reference if isinstance(reference, (list, tuple)) else (reference.values() if isinstance(reference, dict) else [reference]):
            if item:
                modules.add(str(item).split("--")[-1].rsplit(".", 1)[0])
    return all((model_dir / f"{module}.py").is_file() for module in modules)


def _resave_with_remote_code(model_dir: Path, destination: Path) -> None:
    """A folder saved without ``register_for_auto_class``: reload it with hf_fer and save it again with its code."""
    import hf_fer  # noqa: F401  (registers the architectures)
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from ..conversion import save_with_remote_code

    try:
        model = AutoModelForImageClassification.from_pretrained(model_dir, trust_remote_code=False)
        processor = AutoImageProcessor.from_pretrained(model_dir, trust_remote_code=False)
    except ValueError as error:
        raise ValueError(f"{model_dir}: config.json has no usable auto_map and its architecture is not registered ({error})") from None
    save_with_remote_code(model, processor, destination)


def _is_builtin_transformers_model(model_dir: Path) -> bool:
    """Built-in transformers architectures (ViT...) load without remote code: nothing to add."""
    from transformers import CONFIG_MAPPING

    model_type = json.loads((model_dir / "config.json").read_text()).get("model_type")
    try:
        return model_type in CONFIG_MAPPING and CONFIG_MAPPING[model_type].__module__.startswith("transformers.")
    except Exception:
        return False


def _recipe_file(model_dir: Path) -> Path | None:
    """The training recipe named in ``training_info.json`` (written by ``hf-fer train``), when it still exists."""
    try:
        recipe = json.loads((model_dir / "training_info.json").read_text()).get("recipe")
    except (OSError, ValueError, AttributeError):
        return None
    if not recipe:
        return None
    for candidate in (Path(recipe), model_dir / recipe):
        if candidate.is_file() and candidate.suffix in (".yaml", ".yml", ".json"):
            return candidate
    return None


def _check_code_is_self_contained(folder: Path) -> None:
    for source in sorted(folder.glob("*.py")):
        text = source.read_text()
        if re.search(r"^\s*(from|import)\s+hf_fer\b", text, flags=re.MULTILINE):
            raise ValueError(f"{source.name} imports hf_fer: remote code must only import torch/transformers and its sibling files")


def prepare_upload_folder(
    model_dir: str | os.PathLike,
    output: str | os.PathLike,
    *,
    repo_id: str | None = None,
    eval_results: Sequence[str | os.PathLike] | None = None,
    model_name: str | None = None,
    template: str | os.PathLike | None = None,
    training_dataset: str | None = None,
    converted_from: str | None = None,
    base_model: str | None = None,
    base_model_relation: str | None = None,
    commit: str | None = None,
    overwrite: bool = False,
) -> PushResult:
    """Write exactly what ``push`` uploads into ``output`` (created; must be empty unless ``overwrite``)."""
    if base_model_relation is not None and not base_model:
        raise ValueError(f"--base-model-relation {base_model_relation} needs --base-model (the model it relates to)")
    model_dir = Path(model_dir)
    output = Path(output)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"--model {model_dir}: folder does not exist")
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"--model {model_dir}: no config.json; expected a save_pretrained model folder")
    if not (model_dir / "preprocessor_config.json").is_file():
        raise FileNotFoundError(f"--model {model_dir}: no preprocessor_config.json (the image processor must be published too)")
    weights = sorted(p.name for p in model_dir.glob("*.safetensors"))
    if not weights:
        pickles = sorted(p.name for p in model_dir.iterdir() if p.suffix in PICKLE_SUFFIXES)
        raise FileNotFoundError(f"--model {model_dir}: no .safetensors weights" + (f" (found pickled files {pickles}; only safetensors are published)" if pickles else ""))
    if eval_results is None:
        eval_results = [model_dir / "eval_results.json"] if (model_dir / "eval_results.json").is_file() else []
    results = load_eval_results(eval_results)  # checked before anything is written
    _check_results_are_of_this_model(results, model_dir)
    if output.resolve() == model_dir.resolve():
        raise ValueError("--to-folder must differ from --model")
    if output.exists() and any(output.iterdir()):
        if not overwrite:
            raise FileExistsError(f"--to-folder {output} exists and is not empty (pass --overwrite to replace it)")
        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)

    skipped: list[str] = []
    if _auto_map_complete(model_dir) or _is_builtin_transformers_model(model_dir):
        for name in weights + [n for n in CONFIG_FILES if (model_dir / n).is_file()]:
            shutil.copy2(model_dir / name, output / name)
        for source in model_dir.glob("*.py"):
            shutil.copy2(source, output / source.name)
    else:
        _resave_with_remote_code(model_dir, output)
    _check_code_is_self_contained(output)
    for path in sorted(model_dir.iterdir()):
        if path.is_file() and path.suffix in PICKLE_SUFFIXES:
            skipped.append(f"{path.name} (pickled file; only safetensors are published)")
        elif path.is_dir():
            skipped.append(f"{path.name}/ (sub-folders such as training checkpoints are not published)")
    for name in TRAINING_INFO_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, output / name)
    recipe = _recipe_file(model_dir)
    if recipe is not None and not (output / ("recipe" + recipe.suffix)).exists():
        shutil.copy2(recipe, output / ("recipe" + recipe.suffix))

    # Evaluation results: the first at the top level (the card shows its confusion matrix), others under eval/<name>/.
    image_paths: list[str | None] = []
    result_paths: list[str] = []
    used: set[str] = set()
    for position, result in enumerate(results):
        prefix = "" if position == 0 else f"eval/{re.sub(r'[^A-Za-z0-9._-]+', '-', result['dataset_name'])}-{result['split']}/"
        while prefix in used:
            prefix = prefix.rstrip("/") + "-2/"
        used.add(prefix)
        (output / prefix).mkdir(parents=True, exist_ok=True)
        source_folder = Path(result.get("_folder", model_dir))
        clean = {k: v for k, v in result.items() if k != "_folder"}
        (output / prefix / "eval_results.json").write_text(json.dumps(clean, indent=2) + "\n")
        result_paths.append(prefix + "eval_results.json")
        image = None
        for key, filename in (result.get("files") or {}).items():
            if (source_folder / filename).is_file():
                shutil.copy2(source_folder / filename, output / prefix / filename)
                if key == "confusion_matrix":
                    image = prefix + filename
            else:
                skipped.append(f"{filename} listed in {source_folder / 'eval_results.json'} but missing")
        image_paths.append(image)

    # Rendered from the upload folder itself, so the card describes exactly the files that are published.
    card, license_info = render_model_card(
        output, eval_results=results, repo_id=repo_id, model_name=model_name or (None if repo_id else model_dir.resolve().name), template=template,
        training_dataset=training_dataset, converted_from=converted_from, base_model=base_model, commit=commit,
        image_paths=image_paths, base_model_relation=base_model_relation,
    )
    card.save(output / "README.md")
    arch = json.loads((output / "config.json").read_text()).get("model_type")
    yaml_files = eval_results_files(results, arch, repo_id=repo_id, result_paths=result_paths)
    if yaml_files:
        import yaml

        (output / ".eval_results").mkdir(exist_ok=True)
        for name, entries in yaml_files.items():
            (output / ".eval_results" / name).write_text(yaml.safe_dump(entries, sort_keys=False, allow_unicode=True))
    if license_info["license"] == "other":
        arch = json.loads((output / "config.json").read_text()).get("model_type")
        (output / "LICENSE").write_text(license_file_text(arch, license_info, card.data.model_name or model_dir.name))
    files = sorted(str(p.relative_to(output)) for p in output.rglob("*") if p.is_file())
    return PushResult(folder=output, files=files, skipped=skipped, license=license_info)


def push_to_hub(
    model_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    to_folder: str | os.PathLike | None = None,
    commit_message: str | None = None,
    revision: str | None = None,
    token: str | None = None,
    **card_options,
) -> PushResult:
    """Assemble the upload (see :func:`prepare_upload_folder`) and upload it, or leave it in ``to_folder``."""
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", repo_id or ""):
        raise ValueError(f"--repo-id {repo_id!r} is not a valid repository id (expected 'name' or 'org/name')")
    if to_folder is not None:
        return prepare_upload_folder(model_dir, to_folder, repo_id=repo_id, **card_options)
    from huggingface_hub import create_repo, upload_folder

    with tempfile.TemporaryDirectory(prefix="hf_fer_push_") as staging:
        result = prepare_upload_folder(model_dir, Path(staging) / "upload", repo_id=repo_id, **card_options)
        repo = create_repo(repo_id, private=private, exist_ok=True, token=token)
        commit = upload_folder(
            repo_id=repo.repo_id, folder_path=str(result.folder), revision=revision, token=token,
            commit_message=commit_message or f"Upload {Path(model_dir).name} with hf_fer",
        )
        result.url = getattr(commit, "commit_url", None) or str(commit)
    return result


def build_parser(prog: str = "hf-fer push") -> argparse.ArgumentParser:
    """The parser lives in the torch-free :mod:`hf_fer_cli.parsers`, so ``--help`` and argument errors answer at once."""
    from hf_fer_cli.parsers import push_parser

    return push_parser(prog)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    card_options = dict(
        eval_results=args.eval_results, model_name=args.model_name, template=args.template,
        training_dataset=args.training_dataset, converted_from=args.converted_from, base_model=args.base_model,
        base_model_relation=args.base_model_relation,
    )
    if args.to_folder is not None:
        result = push_to_hub(args.model, args.repo_id, to_folder=args.to_folder, overwrite=args.overwrite, **card_options)
    else:
        result = push_to_hub(args.model, args.repo_id, private=args.private, commit_message=args.commit_message,
                             revision=args.revision, **card_options)
    for note in result.skipped:
        print(f"not published: {note}", file=sys.stderr)
    print(f"weights licence: {result.license['license']}" + (f" ({result.license['license_name']})" if result.license.get("license_name") else ""))
    print(f"{len(result.files)} files: {', '.join(result.files)}")
    print(f"wrote {result.folder}" if args.to_folder is not None else f"pushed to {args.repo_id}: {result.url}")
    return 0
