"""README command 1's main job (`hf-fer demo`): the shipped model on a real photo, offline.

The expectations come from looking at the photo (scikit-image's public-domain astronaut.png, 512x512): one
face, centred near (225, 115), clearly smiling.
"""
import json
import subprocess
import sys

import numpy as np
from PIL import Image

from hf_fer.demo import demo_photo_path


def test_demo_photo_finds_the_smiling_astronaut(tmp_path):
    photo = demo_photo_path()
    assert photo is not None, "scikit-image (dev extra) must ship astronaut.png"
    result = subprocess.run([sys.executable, "-m", "hf_fer.cli", "demo", "--no-train", "--output", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "happiness" in result.stdout
    faces = json.loads((tmp_path / "faces.json").read_text())["faces"]
    assert len(faces) == 1, faces
    box = faces[0]["box"]
    centre = ((box["xmin"] + box["xmax"]) / 2, (box["ymin"] + box["ymax"]) / 2)
    assert 190 < centre[0] < 260 and 80 < centre[1] < 150, box
    assert faces[0]["labels"][0]["label"] == "happiness"
    assert len(faces[0]["landmarks"]) == 5
    annotated = Image.open(tmp_path / "astronaut_annotated.png").convert("RGB")
    original = Image.open(photo).convert("RGB")
    assert annotated.size == original.size
    difference = np.abs(np.asarray(annotated, dtype=np.int16) - np.asarray(original, dtype=np.int16)).sum(axis=-1) > 0
    ys, xs = np.nonzero(difference)
    assert difference.any() and xs.min() >= box["xmin"] - 5 and ys.max() <= box["ymax"] + 5  # only the face's drawing changed
