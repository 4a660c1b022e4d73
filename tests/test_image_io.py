"""One image decoder for every path (issue 15).

The generated malformed-image corpus (tests/malformed_corpus.py) goes through ``load_image``, ``hf-fer
evaluate``, ``hf-fer predict`` and ``prepare-dataset`` + a one-epoch training: every file either decodes
to the independently computed pixels on every path or gets one clear per-file error while the run goes
on. Also: decode-time ``max_size`` (and its memory bound), the pixel limit, no trust prompt when an
hf_fer folder is loaded through ``pipeline()``/Auto classes, and ``--model runs/typo``.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

import test_evaluation_fixtures as fx
from malformed_corpus import BOMB_SIDE, make_malformed_corpus

from hf_fer.image_io import ImageDecodeError, load_image

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    return folder, make_malformed_corpus(folder)


@pytest.fixture(scope="module")
def toy():
    with fx.toy_architecture() as arch:
        yield arch


def _assert_pixels(image: Image.Image, expectation, what: str) -> None:
    array = np.asarray(image)
    assert image.mode == "RGB", what
    assert array.shape == expectation.rgb.shape, f"{what}: shape {array.shape}, expected {expectation.rgb.shape}"
    difference = int(np.abs(array.astype(int) - expectation.rgb.astype(int)).max())
    assert difference <= expectation.atol, f"{what}: pixels differ by up to {difference} (> {expectation.atol})"


# --------------------------------------------------------------------------------------------------------
# load_image itself
# --------------------------------------------------------------------------------------------------------
def test_every_corpus_file_decodes_right_or_fails_with_its_reason(corpus):
    folder, expectations = corpus
    for name, expected in expectations.items():
        path = folder / name
        data = path.read_bytes()
        sources = {str(path): path, "<bytes>": data, f"x/{name}": {"bytes": data, "path": f"x/{name}"}}
        for where, source in sources.items():
            if expected.ok:
                _assert_pixels(load_image(source), expected, f"{name} from {where}")
                continue
            with pytest.raises(ImageDecodeError) as caught:
                load_image(source)
            assert expected.error in caught.value.reason.lower(), (name, caught.value.reason)
            assert str(caught.value).startswith(f"{where}: "), str(caught.value)
            assert str(pickle.loads(pickle.dumps(caught.value))) == str(caught.value)  # crosses DataLoader workers
    # The declared size is read from the header and reported: nothing was decoded.
    with pytest.raises(ImageDecodeError, match=f"{BOMB_SIDE}x{BOMB_SIDE}"):
        load_image(folder / "bomb_header.png")


def test_truncated_files_stay_errors_even_if_pil_is_told_to_pad_them(corpus, monkeypatch):
    folder, _ = corpus
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    for name in ("truncated.jpg", "truncated.png"):
        with pytest.raises(ImageDecodeError, match="truncated"):
            load_image(folder / name)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is left as it was


def test_pixel_limit_is_ours_and_configurable(corpus, monkeypatch):
    folder, expectations = corpus
    # PIL's own bomb check (here: 2 x 100 pixels) never escapes; our limit decides.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    _assert_pixels(load_image(folder / "gray48.png"), expectations["gray48.png"], "gray48 under a tiny PIL limit")
    assert Image.MAX_IMAGE_PIXELS == 100
    with pytest.raises(ImageDecodeError, match="too many pixels: 48x48 = 2,304 > limit 2,000"):
        load_image(folder / "gray48.png", max_pixels=2000)
    monkeypatch.setenv("HF_FER_MAX_IMAGE_PIXELS", "2000")
    with pytest.raises(ImageDecodeError, match="limit 2,000"):
        load_image(folder / "gray48.png")
    monkeypatch.setenv("HF_FER_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValueError, match="HF_FER_MAX_IMAGE_PIXELS"):
        load_image(folder / "gray48.png")


def _smooth_rgb(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    return np.stack([127 + 100 * np.sin(x / 97.0), 127 + 100 * np.cos(y / 61.0), (x + y) / (width + height) * 255], -1).astype(np.uint8)


def test_max_size_shrinks_while_decoding_and_matches_a_full_decode(tmp_path):
    array = _smooth_rgb(1600, 2400)
    for fmt in ("JPEG", "PNG"):
        path = tmp_path / f"big.{fmt.lower()}"
        Image.fromarray(array).save(path, fmt, quality=95)
        small = load_image(path, max_size=300)
        assert small.size == (300, 200) and small.mode == "RGB"
        reference = np.asarray(Image.open(path).convert("RGB").resize((300, 200), Image.Resampling.BICUBIC), dtype=np.float64)
        assert np.abs(np.asarray(small, dtype=np.float64) - reference).mean() < 2.0, fmt
    # JPEG: DCT scaling decodes 600x400 pixels only, so a pixel limit the full image exceeds still admits it.
    with pytest.raises(ImageDecodeError, match="too many pixels: 2400x1600"):
        load_image(tmp_path / "big.jpeg", max_pixels=1_000_000)
    assert load_image(tmp_path / "big.jpeg", max_pixels=1_000_000, max_size=300).size == (300, 200)
    with pytest.raises(ImageDecodeError, match="too many pixels: 2400x1600"):  # PNG has no such shortcut
        load_image(tmp_path / "big.png", max_pixels=1_000_000, max_size=300)


def test_decode_size_follows_the_image_processor(toy):
    from hf_fer.image_io import max_size_for
    from hf_fer.models.dacl import DaclImageProcessor
    from hf_fer.training.data import EvalImages, TrainingImages, build_train_transform
    from toy_arch import ToyImageProcessor

    assert max_size_for(ToyImageProcessor()) == 512  # 2 x 32, at least 512
    assert max_size_for(ToyImageProcessor(size={"height": 384, "width": 300})) == 768
    assert max_size_for(DaclImageProcessor(size={"shortest_edge": 300})) == 1200  # room for 2:1 images
    assert max_size_for(object()) is None
    processor = ToyImageProcessor(size={"height": 384, "width": 384})
    assert TrainingImages([], build_train_transform(processor, []), seed=0).max_size == 768
    assert EvalImages([], processor).max_size == 768


def test_arrays_and_tensors(corpus):
    _, expectations = corpus
    gray16 = np.asarray(Image.open(io.BytesIO(_png16_bytes())))
    assert gray16.dtype == np.uint16
    expected16 = np.rint(gray16 / 257.0).astype(np.uint8)
    assert (np.asarray(load_image(gray16))[..., 0] == expected16).all()

    rgb = expectations["gray48.png"].rgb
    assert (np.asarray(load_image(rgb)) == rgb).all()
    chw = torch.from_numpy(rgb).permute(2, 0, 1)
    assert (np.asarray(load_image(chw)) == rgb).all()
    assert (np.asarray(load_image(chw.float() / 255)) == rgb).all()
    assert load_image(rgb, max_size=24).size == (24, 24)
    with pytest.raises(ImageDecodeError, match=r"<array>: float pixel values must lie in \[0, 1\]"):
        load_image(rgb.astype(np.float32))
    with pytest.raises(ImageDecodeError, match="<tensor>: expected a CxHxW tensor"):
        load_image(torch.zeros(5, 8, 8))
    # numpy in torchvision's CxHxW layout, where the last axis cannot be channels: the same pixels
    assert (np.asarray(load_image(np.ascontiguousarray(rgb.transpose(2, 0, 1)))) == rgb).all()
    with pytest.raises(ImageDecodeError, match="<array>: float pixel values must be finite, got NaN"):
        load_image(np.full((8, 8, 3), np.nan, dtype=np.float32))


def test_urls_are_fetched_and_fetch_failures_name_the_url(http_folder, monkeypatch):
    base, folder = http_folder
    rgb = _smooth_rgb(40, 56)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG")
    (folder / "photo.png").write_bytes(buffer.getvalue())
    assert (np.asarray(load_image(f"{base}/photo.png")) == rgb).all()
    assert (np.asarray(load_image({"bytes": None, "path": f"{base}/photo.png"})) == rgb).all()  # a datasets entry
    with pytest.raises(ImageDecodeError, match=rf"{re.escape(base)}/missing.png: cannot fetch the URL \(HTTP 404"):
        load_image(f"{base}/missing.png")
    (folder / "empty.png").write_bytes(b"")
    with pytest.raises(ImageDecodeError, match="empty download"):
        load_image(f"{base}/empty.png")
    monkeypatch.setenv("HF_FER_URL_MAX_BYTES", "100")
    with pytest.raises(ImageDecodeError, match=r"photo.png: download too large .*limit 100"):
        load_image(f"{base}/photo.png")
    with pytest.raises(ImageDecodeError, match="http://127.0.0.1:9/x.png: cannot fetch the URL"):
        load_image("http://127.0.0.1:9/x.png")  # nothing listens on the discard port


def _png16_bytes() -> bytes:
    values = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 1000).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, "PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------------------
# evaluate / predict: bad files reported per file, the run continues, good files decode identically
# --------------------------------------------------------------------------------------------------------
def test_evaluate_reports_each_bad_file_and_evaluates_the_rest(toy, corpus, tmp_path):
    from hf_fer.cli import main

    folder, expectations = corpus
    model_dir = fx.save_toy_model(tmp_path / "model")
    good = [name for name, expected in expectations.items() if expected.ok]
    bad = [name for name, expected in expectations.items() if not expected.ok]
    # Each good image goes into the class plain transformers predicts for its *expected* pixels, so the
    # evaluation is 100 % accurate exactly when every path decoded them as expected.
    predicted = fx.reference_predictions(model_dir, [Image.fromarray(expectations[n].rgb) for n in good]).argmax(-1).tolist()
    data = tmp_path / "data"
    for name, label in [*zip(good, predicted), *[(n, 0) for n in bad]]:
        target = data / "test" / fx.TOY_LABELS[label]
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / name, target / name)

    assert main(["evaluate", "--model", str(model_dir), "--dataset", str(data), "--split", "test", "--batch-size", "4",
                 "--output-dir", str(tmp_path / "eval"), "--no-plots", "--no-progress"]) == 0
    results = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    skipped = {Path(item["path"]).name: item["error"] for item in results["skipped_images"]}
    assert sorted(skipped) == sorted(bad)
    for name, error in skipped.items():
        assert expectations[name].error in error.lower(), (name, error)
    assert results["num_samples"] == len(good)
    assert results["metrics"]["accuracy"] == 1.0


def test_predict_reports_each_bad_file_and_predicts_the_rest(toy, corpus, tmp_path, capsys):
    from hf_fer.cli import main

    folder, expectations = corpus
    model_dir = fx.save_toy_model(tmp_path / "model")
    assert main(["predict", "--model", str(model_dir), *[str(folder / name) for name in expectations], "--no-detect", "--json"]) == 0
    lines = {Path(line["file"]).name: line for line in map(json.loads, capsys.readouterr().out.strip().splitlines())}
    assert sorted(lines) == sorted(expectations)
    for name, expected in expectations.items():
        if expected.ok:
            assert "error" not in lines[name], lines[name]
            (face,) = lines[name]["faces"]  # --no-detect: the whole image is the face
            assert face["labels"][0]["label"] in fx.TOY_LABELS.values(), lines[name]
        else:
            assert expected.error in lines[name]["error"].lower(), lines[name]


# --------------------------------------------------------------------------------------------------------
# prepare-dataset validation and training: what validation accepts trains, decoded the same way
# --------------------------------------------------------------------------------------------------------
def test_prepare_dataset_accepts_exactly_what_trains_and_training_decodes_identically(toy, corpus, tmp_path):
    import datasets

    from hf_fer.cli import main
    from hf_fer.training import recipe_from_dict, train
    from hf_fer.training.data import TrainingImages, build_train_transform, decode_row_image
    from toy_arch import ToyImageProcessor

    folder, expectations = corpus
    raw = tmp_path / "raw"
    for split in ("train", "test"):
        for index, name in enumerate(sorted(expectations)):
            target = raw / split / ("anger", "happiness", "neutral")[index % 3]
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(folder / name, target / name)
    prepared = tmp_path / "prepared"
    assert main(["prepare-dataset", "--benchmark", "raf-db", "--raw-dir", str(raw), "--output", str(prepared), "--no-progress"]) == 0

    report = json.loads((prepared / "validation_report.json").read_text())
    refused = {Path(item["file"]).name: item["detail"] for item in report["issues"]["unreadable_image"] if item["split"] == "train"}
    assert sorted(refused) == sorted(name for name, expected in expectations.items() if not expected.ok)
    for name, detail in refused.items():
        assert expectations[name].error in detail.lower(), (name, detail)

    train_split = datasets.load_from_disk(str(prepared))["train"]
    rows = train_split.cast_column("image", datasets.Image(decode=False))
    assert sorted(Path(entry["path"]).name for entry in rows["image"]) == sorted(n for n, e in expectations.items() if e.ok)
    for index, entry in enumerate(rows["image"]):  # training's decode: the expected pixels, CMYK/16-bit/palette included
        name = Path(entry["path"]).name
        _assert_pixels(decode_row_image(entry, index), expectations[name], f"training decode of {name}")
    images = TrainingImages(train_split, build_train_transform(ToyImageProcessor(), []), seed=0)
    assert all(images[i]["pixel_values"].shape == (3, 32, 32) for i in range(len(images)))

    recipe = recipe_from_dict({
        "description": "issue 15: the accepted corpus trains",
        "model": {"arch": "toy", "label_space": "raf-db", "config": {"hidden_size": 4}},
        "training": {"seed": 0, "epochs": 1, "batch_size": 4, "eval_batch_size": 4, "optimizer": {"name": "adam", "lr": 1.0e-3}},
    })
    train(recipe, str(prepared), tmp_path / "run", quiet=True)
    assert (tmp_path / "run" / "model.safetensors").is_file()
    results = json.loads((tmp_path / "run" / "training_results.json").read_text())
    assert len(results["history"]) == 1 and results["global_step"] >= 1  # one epoch over the accepted images
    assert "test" in results  # the test split (CMYK, 16-bit, palette... too) was evaluated


# --------------------------------------------------------------------------------------------------------
# memory: huge images never sit full-size in a batch
# --------------------------------------------------------------------------------------------------------
def test_decode_memory_benchmark_stays_bounded():
    # 6 x 6000² RGB PNGs: holding the full decodes would take 6 x 103 MB; with max_size only one at a time exists.
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "decode_memory_benchmark.py"), "--count", "6", "--side", "6000"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "to 448x448" in result.stdout, result.stdout
    over = float(re.search(r"peak over baseline: (-?\d+) MB", result.stdout).group(1))
    assert over < 400, result.stdout


# --------------------------------------------------------------------------------------------------------
# loading hf_fer folders: no trust prompt, the folder's code never runs; path typos
# --------------------------------------------------------------------------------------------------------
_LOAD_EVERY_WAY = textwrap.dedent(
    """
    import sys
    import hf_fer, transformers
    from PIL import Image

    folder = sys.argv[1]
    for name in ("AutoConfig", "AutoModelForImageClassification", "AutoImageProcessor", "AutoProcessor", "AutoVideoProcessor"):
        try:
            loaded = getattr(transformers, name).from_pretrained(folder)
            print("LOADED", name, type(loaded).__module__)
        except ValueError as error:
            print("REFUSED", name, str(error).splitlines()[0])
    classifier = transformers.pipeline("image-classification", model=folder)
    print("PIPELINE", type(classifier.model).__module__, classifier(Image.new("RGB", (80, 80), (128, 100, 90)))[0]["label"])
    """
)


def test_loading_an_hf_fer_folder_never_prompts_nor_runs_its_code(tmp_path):
    from hf_fer.conversion import save_with_remote_code
    from hf_fer.models.dacl import DaclConfig, DaclForImageClassification, DaclImageProcessor

    config = DaclConfig(backbone_depths=[1, 1, 1, 1], image_size=64, attention_hidden_sizes=[32, 16, 8], num_labels=3)
    folder = tmp_path / "model"
    save_with_remote_code(DaclForImageClassification(config), DaclImageProcessor(size={"shortest_edge": 73},
                          crop_size={"height": 64, "width": 64}), folder)
    code_files = sorted(folder.glob("*.py"))
    assert code_files and json.loads((folder / "preprocessor_config.json").read_text())["auto_map"]
    marker = tmp_path / "code_ran"
    for code in code_files:
        code.write_text(code.read_text() + f"\nopen({str(marker)!r}, 'a').write({code.name!r} + '\\n')\n")

    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}
    # Non-interactive, and a "y" waiting on stdin: a trust prompt anywhere would print itself and then run
    # the planted code (the marker), instead of blocking or failing quietly.
    result = subprocess.run([sys.executable, "-c", _LOAD_EVERY_WAY, str(folder)], input="y\n" * 20,
                            capture_output=True, text=True, env=env, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Do you wish to run the custom code" not in output and "trust_remote_code" not in output, output
    assert not marker.exists(), f"the folder's code ran: {marker.read_text()}"
    for name in ("AutoConfig", "AutoModelForImageClassification", "AutoImageProcessor", "AutoProcessor"):
        assert f"LOADED {name} hf_fer.models.dacl." in output, output
    assert "REFUSED AutoVideoProcessor" in output and "no video processor" in output, output
    assert "PIPELINE hf_fer.models.dacl.modeling_dacl" in output, output


def test_model_path_typo_says_no_such_folder(tmp_path, monkeypatch, capsys):
    from hf_fer.cli import main
    from hf_fer.evaluation.inference import load_model_for_inference

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "runs").mkdir()
    with pytest.raises(FileNotFoundError, match="^no such folder: runs/typo$"):
        load_model_for_inference("runs/typo", device="cpu")
    with pytest.raises(FileNotFoundError, match="no such folder: ./runs/typo"):
        load_model_for_inference("./runs/typo", device="cpu")
    # An id that could be a Hub repo: both readings are reported, not a bare connection error.
    with pytest.raises(FileNotFoundError, match=r"^no such folder: someorg/typo \(nor a Hub model id"):
        load_model_for_inference("someorg/typo", device="cpu")
    assert main(["evaluate", "--model", "runs/typo", "--dataset", "synthetic", "--no-progress"]) != 0
    assert "no such folder: runs/typo" in capsys.readouterr().err


def test_draft_size_decodes_jpeg_at_the_smallest_dct_scale_not_below_it(tmp_path):
    """``draft_size``: JPEG DCT scaling only (no resampling), the long side never below the request; the pixels are
    close to a full decode resized the same way; PNGs and the default are unaffected."""
    rng = np.random.default_rng(0)
    smooth = Image.fromarray(rng.integers(0, 256, size=(70, 96, 3), dtype=np.uint8)).resize((1920, 1400), Image.BILINEAR)
    smooth.save(tmp_path / "big.jpg", quality=95)
    smooth.save(tmp_path / "big.png")
    assert load_image(tmp_path / "big.jpg").size == (1920, 1400)
    assert load_image(tmp_path / "big.jpg", draft_size=640).size == (960, 700)  # 1/2: 1/4 would give 480 < 640
    assert load_image(tmp_path / "big.jpg", draft_size=480).size == (480, 350)  # 1/4 exactly reaches it
    assert load_image(tmp_path / "big.jpg", draft_size=2000).size == (1920, 1400)
    assert load_image(tmp_path / "big.png", draft_size=640).size == (1920, 1400)
    full = np.asarray(load_image(tmp_path / "big.jpg").resize((960, 700), Image.Resampling.BOX), dtype=np.float64)
    draft = np.asarray(load_image(tmp_path / "big.jpg", draft_size=640), dtype=np.float64)
    assert np.abs(full - draft).mean() < 3.0
    with pytest.raises(ValueError, match="draft_size must be a positive int"):
        load_image(tmp_path / "big.jpg", draft_size=0)
