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
    # the shipped default model (hf_fer.pretrained_path()) and the face detector's weights travel with the wheel
    package_data={"hf_fer.hub": ["templates/*.md"], "hf_fer.pretrained": ["*/*.json", "*/*.safetensors", "*/*.md"],
                  "hf_fer.faces": ["weights/*.safetensors", "weights/NOTICE"]},
    install_requires=[
        "torch>=2.4",
        "torchvision>=0.19",
        "transformers>=5.0",
        "datasets>=3.0",
        "accelerate>=1.1",
        "evaluate>=0.4",
        "safetensors>=0.4",
        "huggingface-hub>=1.0",
        "pillow>=10.0",
        "numpy>=1.24",
        "pyyaml>=6.0",
        "tqdm>=4.66",
        "matplotlib>=3.7",
        "scikit-learn>=1.3",  # evaluation metrics (hf_fer.evaluation.metrics), calibration checks
        "scipy>=1.10",  # McNemar exact test, temperature-scaling fit
    ],
    extras_require={
        # dev: everything the test suite exercises (no test may be skipped for a missing dependency);
        # onnxscript: torch.onnx.export(dynamo=True), the default ONNX exporter since torch 2.9, needs it (hf-fer export)
        "dev": ["pytest>=8.0", "pytest-timeout>=2.3", "h5py>=3.10", "onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.1",
                "av>=12.0", "scikit-image>=0.22"],
        "onnx": ["onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.1"],
        "video": ["av>=12.0"],  # PyAV (bundles its own FFmpeg): video files, webcams, RTSP streams
        "convert": ["h5py>=3.10"],  # Keras .hdf5 checkpoints (mini-Xception)
    },
    # hf_fer_cli (a top-level package found by find_packages) answers --help without importing torch
    entry_points={"console_scripts": ["hf-fer=hf_fer_cli:main"]},
)
