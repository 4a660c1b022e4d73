"""POSTER V2 in the transformers ecosystem: Auto classes, save/load, remote code, pipeline, Trainer."""
from __future__ import annotations

import numpy as np
import torch

import harness
from hf_fer.models.poster_v2 import PosterV2Config, PosterV2ForImageClassification, PosterV2ImageProcessor
from test_poster_v2 import RAFDB, tiny_config, tiny_model


def test_auto_classes_and_outputs():
    from transformers import AutoConfig, AutoModelForImageClassification

    config = AutoConfig.for_model("poster_v2")
    assert isinstance(config, PosterV2Config) and config.num_labels == 7 and config.problem_type == "single_label_classification"
    model = AutoModelForImageClassification.from_config(tiny_config())
    assert isinstance(model, PosterV2ForImageClassification)
    outputs = model.eval()(pixel_values=torch.randn(2, 3, 56, 56), output_hidden_states=True)
    assert len(outputs.hidden_states) == 1 + model.config.num_hidden_layers
    assert outputs.hidden_states[0].shape == (2, 1 + 3 * 16, 32)
    as_tuple = model(pixel_values=torch.randn(2, 3, 56, 56), labels=torch.tensor([1, 2]), return_dict=False)
    assert as_tuple[0].dim() == 0 and as_tuple[1].shape == (2, 7)


def test_save_load_roundtrip(tmp_path):
    from transformers import AutoImageProcessor

    harness.check_save_load_roundtrip(tiny_model(), torch.randn(2, 3, 224, 224), tmp_path)
    PosterV2ImageProcessor().save_pretrained(tmp_path / "roundtrip")
    processor = AutoImageProcessor.from_pretrained(tmp_path / "roundtrip")
    assert isinstance(processor, PosterV2ImageProcessor) and processor.size == {"height": 224, "width": 224}


def test_remote_code_without_hf_fer(tmp_path):
    folder = harness.check_remote_code(tiny_model(), PosterV2ImageProcessor(), torch.randn(2, 3, 224, 224), tmp_path)
    shipped = {p.name for p in folder.glob("*.py")}
    assert {"modeling_poster_v2.py", "configuration_poster_v2.py", "ir50.py", "mobilefacenet.py",
            "image_processing_poster_v2.py"} <= shipped, shipped
    assert "convert_poster_v2_original.py" not in shipped


def test_pipeline_prints_rafdb_names(tmp_path):
    predictions = harness.check_pipeline(tiny_model(), PosterV2ImageProcessor(), tmp_path)
    assert {p["label"] for p in predictions} == set(RAFDB)


def test_trainer_two_steps_on_synthetic_faces(tmp_path):
    from transformers import Trainer, TrainingArguments

    from hf_fer.data.synthetic import make_synthetic_fer

    processor = PosterV2ImageProcessor()
    dataset = make_synthetic_fer(8, image_size=64, seed=0, label_space="raf-db")

    def transform(batch):
        pixel_values = processor(images=[image.convert("RGB") for image in batch["image"]], return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixel_values, "labels": batch["label"]}

    model = tiny_model()
    landmark_before = {k: v.clone() for k, v in model.poster_v2.landmark_backbone.named_parameters()}
    classifier_before = model.classifier.weight.clone()
    args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-3,
                             report_to=[], save_strategy="no", logging_steps=1, use_cpu=True, dataloader_num_workers=0,
                             remove_unused_columns=False)
    result = Trainer(model=model, args=args, train_dataset=dataset.with_transform(transform)).train()
    assert result.global_step == 2 and np.isfinite(result.training_loss)
    assert not torch.equal(model.classifier.weight, classifier_before)
    for name, param in model.poster_v2.landmark_backbone.named_parameters():
        assert torch.equal(param, landmark_before[name]), f"frozen {name} changed"
