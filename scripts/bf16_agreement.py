#!/usr/bin/env python
"""Top-1 agreement of the bf16 PyTorch paths with fp32 on a *trained* model (the README's best-path table).

Agreement on random weights says little (near-ties everywhere), so this trains a recipe (or takes a trained model
folder) and compares, on held-out synthetic faces of each difficulty, fp32 eager with bf16 autocast in eager and
with ``--runtime compile`` (``hf_fer.runtime.compile_for_inference``: Inductor freezing on CPU):

    python scripts/bf16_agreement.py --recipe modeling_configs/poster_v2/synthetic.yaml --output /tmp/pv2
    python scripts/bf16_agreement.py --model runs/arm --faces 1024

Prints one line per difficulty and path: agreement, flips, max |logit diff| and the largest fp32 margin flipped.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="a trained hf_fer model folder")
    source.add_argument("--recipe", type=Path, help="a training recipe (YAML) to train first, with its synthetic data")
    parser.add_argument("--output", type=Path, help="--recipe: where the trained model goes (reused when present)")
    parser.add_argument("--faces", type=int, default=2048, help="faces per difficulty (default 2048)")
    parser.add_argument("--seed", type=int, default=7000, help="face seed, away from the recipes' training seeds")
    parser.add_argument("--label-space", help="--model: the faces' label space (default: the synthetic default)")
    parser.add_argument("--image-size", type=int, default=64, help="--model: rendered face size (default 64)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import hf_fer  # noqa: F401  (Auto classes)
    from hf_fer.data.synthetic import synthetic_arrays
    from hf_fer.runtime import compile_for_inference
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    image_size, label_space = args.image_size, args.label_space
    folder = args.model
    if args.recipe is not None:
        from hf_fer.training import load_recipe, train

        if args.output is None:
            parser.error("--recipe needs --output")
        recipe = load_recipe(args.recipe)
        image_size, label_space = recipe.data.synthetic.image_size, recipe.data.synthetic.label_space
        folder = args.output / "model"
        if not (folder / "model.safetensors").is_file():
            started = time.time()
            result = train(recipe, "synthetic", folder, quiet=True)
            print(f"trained in {time.time() - started:.0f} s: test accuracy {result['test']['accuracy']:.3f}")
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    compiled = compile_for_inference(model, "cpu")
    for difficulty in ("easy", "standard"):
        kwargs = {"label_space": label_space} if label_space else {}
        faces = synthetic_arrays(args.faces, image_size=image_size, seed=args.seed, difficulty=difficulty, **kwargs)[0]
        pixel_values = processor(images=list(faces), return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            reference = torch.cat([model(pixel_values=batch).logits for batch in pixel_values.split(128)])
            with torch.autocast("cpu", dtype=torch.bfloat16):
                paths = {
                    "bf16 autocast": torch.cat([model(pixel_values=b).logits.float() for b in pixel_values.split(128)]),
                    "bf16 autocast + compile": torch.cat([compiled(pixel_values=b).logits.float() for b in pixel_values.split(128)]),
                }
        top2 = reference.topk(2, dim=-1).values
        margin = top2[:, 0] - top2[:, 1]
        for name, logits in paths.items():
            flips = logits.argmax(-1) != reference.argmax(-1)
            largest = float(margin[flips].max()) if flips.any() else 0.0
            print(f"{difficulty:8s} {name:24s} agreement {1 - float(flips.float().mean()):.4f} ({int(flips.sum())} of {len(flips)} flipped), "
                  f"max |logit diff| {float((logits - reference).abs().max()):.3g}, largest fp32 margin flipped {largest:.3g} "
                  f"(median margin {float(margin.median()):.3g})")


if __name__ == "__main__":
    main()
