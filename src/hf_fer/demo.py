"""``hf-fer demo``: the README's main job — the real thing on a real photo, then the training loop on synthetic faces.

1. A real photo (scikit-image's public-domain ``astronaut.png``, which the ``dev`` extra installs; ``--image`` for
   your own) goes through ``pipeline("facial-expression-recognition")`` with the model shipped in the package (the
   FER2013 mini-Xception): faces are detected offline, aligned the way the model was trained, classified; the faces
   are printed, written to ``OUTPUT/faces.json`` and drawn on ``OUTPUT/<photo>_annotated.png``.
2. ``hf-fer train`` runs the ARM synthetic recipe into ``OUTPUT/arm-synthetic`` (``OUTPUT/<arch>-<recipe>``) (evaluated on held-out faces,
   reloaded with the Auto classes and the pipeline), proving the training loop works on this machine; the last line is the
   accuracy on held-out standard-difficulty faces rendered with a seed the run never saw.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

__all__ = ["demo_photo_path", "main"]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RECIPE = "modeling_configs/arm/synthetic.yaml"


def demo_photo_path() -> Path | None:
    """scikit-image's ``astronaut.png`` (public domain, NASA), found on disk without importing scikit-image."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "data" / "astronaut.png"
    return path if path.is_file() else None


def _recipe_path(recipe: str) -> Path | None:
    for candidate in (Path(recipe), REPO_ROOT / recipe):
        if candidate.is_file():
            return candidate
    return None


def run_photo(image: Path, output: Path, top_k: int = 3) -> list[dict]:
    from transformers import pipeline

    import hf_fer
    from hf_fer.faces.video import draw_faces, save_image_atomically
    from hf_fer.image_io import load_image

    model = hf_fer.pretrained_path()
    print(f"== faces in {image} (model: the shipped {hf_fer.DEFAULT_MODEL}, offline)")
    fer = pipeline("facial-expression-recognition", model=str(model))
    faces = fer(str(image), top_k=top_k)
    if not faces:
        print("no face found")
    for number, face in enumerate(faces, 1):
        box = face["box"]
        labels = "  ".join(f"{entry['label']} {entry['score']:.3f}" for entry in face["labels"])
        print(f"face {number}: box ({box['xmin']:.0f}, {box['ymin']:.0f}, {box['xmax']:.0f}, {box['ymax']:.0f})  "
              f"detection {face['detection_score']:.3f}  {labels}")
    output.mkdir(parents=True, exist_ok=True)
    annotated = output / f"{image.stem}_annotated.png"
    save_image_atomically(draw_faces(load_image(image), faces, top_labels=top_k), annotated)
    temporary = output / ".faces.partial.json"
    temporary.write_text(json.dumps({"image": str(image), "model": str(model), "faces": faces}, indent=2))
    os.replace(temporary, output / "faces.json")
    print(f"annotated photo: {annotated}\nfaces as JSON: {output / 'faces.json'}")
    return faces


def build_parser(prog: str = "hf-fer demo") -> argparse.ArgumentParser:
    """The parser lives in the torch-free :mod:`hf_fer_cli.parsers`, so ``--help`` and argument errors answer at once."""
    from hf_fer_cli.parsers import demo_parser

    return demo_parser(prog)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output = Path(args.output)
    image = Path(args.image) if args.image else demo_photo_path()
    if image is None:
        raise FileNotFoundError("no demo photo: install scikit-image (`pip install -e \".[dev]\"`) or pass --image PHOTO")
    faces = run_photo(image, output, top_k=args.top_k)
    if args.no_train:
        return 0 if faces else 1
    recipe = _recipe_path(args.recipe)
    if recipe is None:
        print(f"skipping the training run: recipe {args.recipe} not found (run from the repository root)", file=sys.stderr)
        return 0
    from hf_fer.training import main as train_main

    run = output / f"{recipe.parent.name}-{recipe.stem}"
    print(f"\n== training {recipe} on synthetic faces -> {run}")
    code = train_main(["--recipe", str(recipe), "--dataset", "synthetic", "--output", str(run), "--force"])
    if code == 0:
        print_held_out_accuracy(recipe, run)
    return code


def print_held_out_accuracy(recipe: Path, run: Path) -> str | None:
    """One line: the trained model's accuracy on the held-out test faces, saying which faces (difficulty, size, count, seed)."""
    from .training import load_recipe

    results_file = run / "training_results.json"
    if not results_file.is_file():
        return None
    test = json.loads(results_file.read_text()).get("test") or {}
    if "accuracy" not in test:
        return None
    from .data.synthetic import difficulty_name
    from .evaluation.synthetic import synthetic_render_options

    # the faces `hf-fer evaluate --model RUN --dataset synthetic` renders: the run's own test split
    _, rendered = synthetic_render_options(str(run), "test")
    synthetic = load_recipe(recipe).data.synthetic
    trained_on = difficulty_name(synthetic.train_difficulty or synthetic.difficulty)
    line = (f"held-out test accuracy: {test['accuracy']:.1%} on {test.get('num_samples', rendered['num_images'])} {rendered['difficulty']!r} faces "
            f"({rendered['image_size']} px, seed {rendered['render_seed']}, never used in training or model selection; "
            f"trained on {synthetic.num_train} {trained_on} faces)")
    print(line)
    return line
