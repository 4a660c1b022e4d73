"""Training with Accelerate from YAML recipes (DESIGN §6): ``hf-fer train`` / ``accelerate launch scripts/train.py``."""
from __future__ import annotations

import sys
from pathlib import Path

from .hub import SaveForHubCallback, save_for_hub
from .launch import relaunch_cpu_processes_if_needed
from .loop import latest_checkpoint, train
from .optim import SAM
from .recipe import Recipe, RecipeError, load_recipe, recipe_from_dict

__all__ = ["train", "main", "SetEpochCallback", "SaveForHubCallback", "save_for_hub", "load_recipe", "recipe_from_dict", "Recipe", "RecipeError", "SAM", "latest_checkpoint"]

def _trainer_callback_base():
    from transformers import TrainerCallback

    return TrainerCallback


class SetEpochCallback(_trainer_callback_base()):
    """For plain ``transformers.Trainer`` users: calls ``model.set_epoch(epoch)`` at each epoch start (DMUE's ramp-up).

    The hf_fer loop does this itself; ``Trainer`` knows nothing of it, so without this callback a DMUE
    model trained with ``Trainer`` keeps its ramp at epoch 0.
    """

    def on_epoch_begin(self, args, state, control, model=None, **kwargs):
        if model is not None and hasattr(model, "set_epoch"):
            model.set_epoch(int(state.epoch or 0))


def main(argv: list[str] | None = None) -> int:
    from hf_fer_cli.parsers import train_parser  # torch-free: `hf-fer train --help` answers at once

    parser = train_parser()
    args = parser.parse_args(argv)
    recipe = load_recipe(args.recipe, args.overrides)  # a bad recipe is reported once, before any process starts
    exit_code = relaunch_cpu_processes_if_needed(_script_argv())
    if exit_code is not None:
        return exit_code
    results = train(recipe, args.dataset, args.output, resume=args.resume, max_steps=args.max_steps, quiet=args.quiet, force=args.force)
    if results.get("best_epoch") is not None and _is_main_process():
        print(f"best model (validation {recipe.training.selection_metric} {results['best_validation_' + recipe.training.selection_metric]:.4f}, "
              f"epoch {results['best_epoch']}) saved to {args.output}")
    if args.dataset == "synthetic" and not args.no_sample_predictions and results.get("best_epoch") is not None:
        show_sample_predictions(args.output, recipe)
    return 0


def _is_main_process() -> bool:
    """Rank 0 (or a single process): user-facing lines are printed once, not once per process."""
    from accelerate import PartialState

    return PartialState().is_main_process


def _script_argv() -> list[str]:
    """This process's command line in the form ``accelerate launch`` takes after its own options."""
    import hf_fer_cli

    script = Path(sys.argv[0]).resolve()
    if script.is_relative_to(Path(__file__).resolve().parents[1]):  # python -m hf_fer.cli train ...
        return ["-m", "hf_fer.cli", *sys.argv[1:]]
    if script.is_relative_to(Path(hf_fer_cli.__file__).resolve().parent):  # python -m hf_fer_cli train ...
        return ["-m", "hf_fer_cli", *sys.argv[1:]]
    return [sys.argv[0], *sys.argv[1:]]


def show_sample_predictions(folder: str, recipe: Recipe, count: int = 6) -> None:
    """Reload the saved model as any user would (Auto classes + pipeline) and classify new synthetic faces."""
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return
    from transformers import AutoModelForImageClassification, pipeline

    from ..data.synthetic import make_synthetic_fer

    model = AutoModelForImageClassification.from_pretrained(folder)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    from ..labels import benchmark_of

    faces = make_synthetic_fer(count, image_size=recipe.data.synthetic.image_size, seed=recipe.data.synthetic.seed + 4242,
                               label_space=benchmark_of(names) or recipe.data.synthetic.label_space)
    classifier = pipeline("image-classification", model=folder, trust_remote_code=False)
    predictions = classifier(list(faces["image"]), top_k=1)
    print(f"\nreloaded {folder} with AutoModelForImageClassification + pipeline('image-classification'); new synthetic faces:")
    correct = 0
    for prediction, label in zip(predictions, faces["label"]):
        truth = faces.features["label"].names[label]
        correct += prediction[0]["label"] == truth
        print(f"  true {truth:<10} predicted {prediction[0]['label']:<10} ({prediction[0]['score']:.2f})")
    print(f"  {correct}/{count} correct")


if __name__ == "__main__":
    sys.exit(main())
