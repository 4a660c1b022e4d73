from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="hf_fer",
    version="0.1.0",
    description="Facial expression recognition models (POSTER V2, ARM, DACL, DMUE, VT-NR, mini-Xception) as native Hugging Face transformers models",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8") if Path(__file__).with_name("README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    package_dir={"": "src"},
    packages=find_packages("src"),
    include_package_data=True,
    # the model-card templates (one per architecture), the shipped default model (hf_fer.pretrained_path()) and the
    # face detector's weights travel with the wheel
    package_data={"hf_fer.hub": ["templates/*.md"], "hf_fer.pretrained": ["*/*.json", "*/*.safetensors", "*/*.md"],
                  "hf_fer.faces": ["weights/*.safetensors", "weights/NOTICE"]},
    # Lower bounds: the oldest versions hf_fer is written for; upper bounds: the next major version, whose breaking
    # changes nobody has tested. constraints.txt pins the exact versions CI tests: pip install -e ".[dev]" -c constraints.txt
    install_requires=[
        "torch>=2.4,<3",
        "torchvision>=0.19,<1",
        "transformers>=5.0,<6",
        "datasets>=3.0,<6",
        "accelerate>=1.1,<2",
        "evaluate>=0.4,<1",
        "safetensors>=0.4,<1",
        "huggingface-hub>=1.0,<3",
        "pillow>=10.0,<14",
        "numpy>=1.24,<3",
        "pyyaml>=6.0,<7",
        "tqdm>=4.66,<5",
        "matplotlib>=3.7,<4",
        "scikit-learn>=1.3,<2",  # evaluation metrics (hf_fer.evaluation.metrics), calibration checks
        "scipy>=1.10,<2",  # McNemar exact test, temperature-scaling fit
    ],
    extras_require={
        # dev: everything the test suite exercises (no test may be skipped for a missing dependency);
        # onnxscript: torch.onnx.export(dynamo=True), the default ONNX exporter since torch 2.9, needs it (hf-fer export)
        # parameterized: the vendored transformers common tests (tests/transformers_common/) use it
        # pytest-xdist: the suite runs on one worker per core by default (tests/conftest.py; serial: -p no:xdist)
        # setuptools: tests/test_packaging.py builds the wheel without build isolation (offline; bdist_wheel built in since 70.1)
        "dev": ["pytest>=8.0,<10", "pytest-timeout>=2.3,<3", "pytest-xdist>=3.5,<4", "h5py>=3.10,<4", "onnx>=1.16,<2", "onnxruntime>=1.18,<2",
                "onnxscript>=0.1,<1", "av>=12.0,<19", "scikit-image>=0.22,<1", "setuptools>=70.1,<85",
                "parameterized>=0.9,<1"],
        "onnx": ["onnx>=1.16,<2", "onnxruntime>=1.18,<2", "onnxscript>=0.1,<1"],
        "video": ["av>=12.0,<19"],  # PyAV (bundles its own FFmpeg): video files, webcams, RTSP streams
        "convert": ["h5py>=3.10,<4"],  # Keras .hdf5 checkpoints (mini-Xception)
    },
    # hf_fer_cli (a top-level package found by find_packages) answers --help without importing torch
    entry_points={"console_scripts": ["hf-fer=hf_fer_cli:main"]},
)
