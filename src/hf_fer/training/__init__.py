"""Training with Accelerate from YAML recipes (DESIGN §6): ``hf-fer train`` / ``accelerate launch scripts/train.py``."""
from __future__ import annotations

import argparse
import sys

from .loop import latest_checkpoint, train
from .optim import SAM
from .recipe import Recipe, RecipeError, load_recipe, recipe_from_dict

__all__ = ["train", "main", "load_recipe", "recipe_from_dict", "Recipe", "RecipeError", "SAM", "latest_checkpoint"]

EPILOG = """examples:
  hf-fer train --recipe modeling_configs/arm/synthetic.yaml --dataset synthetic --output runs/arm-demo
  accelerate launch scripts/train.py --recipe modeling_configs/poster_v2/rafdb.yaml --dataset data/rafdb --output runs/pv2
  accelerate launch --num_processes 2 --cpu scripts/train.py --recipe R --dataset D --output O
  hf-fer train --recipe R --dataset D --output O --resume            # continue from O/checkpoints/step_K (latest)
  hf-fer train --recipe R --dataset D --output O --set training.epochs=3 --set training.optimizer.lr=1e-4
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hf-fer train", description="Train or fine-tune a FER model from a YAML recipe with Accelerate.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True, help="YAML recipe, e.g. modeling_configs/<arch>/<dataset>.yaml")
    parser.add_argument("--dataset", required=True, help="'synthetic', a prepare-dataset/save_to_disk folder, an imagefolder directory or a Hub dataset id")
    parser.add_argument("--output", required=True, help="output folder: the best model lands here, last model in OUTPUT/last")
    parser.add_argument("--resume", nargs="?", const="latest", default=None, help="resume from the latest checkpoint in OUTPUT (or a given checkpoint folder)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps (overrides the recipe's epochs)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value (dotted key, YAML value)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    recipe = load_recipe(args.recipe, args.overrides)
    results = train(recipe, args.dataset, args.output, resume=args.resume, max_steps=args.max_steps, quiet=args.quiet)
    if results.get("best_epoch") is not None:
        print(f"best model (validation {recipe.training.selection_metric} {results['best_validation_' + recipe.training.selection_metric]:.4f}, "
              f"epoch {results['best_epoch']}) saved to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
