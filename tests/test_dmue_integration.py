"""DMUE in the transformers ecosystem: image processor vs upstream's eval transform, save/load, remote code,
pipeline with AffectNet-8 names, and two ``transformers.Trainer`` steps of the multi-branch model on synthetic faces.
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision import transforms

import harness
import hf_fer  # noqa: F401  (registers the Auto classes)
from hf_fer.labels import get_label_names, id2label
from hf_fer.models.dmue import DmueConfig, DmueForImageClassification, DmueImageProcessor


def test_image_processor_matches_upstream_eval_transform():
    """Upstream eval: Resize((256, 256)) bilinear -> CenterCrop(224) -> ToTensor -> Normalize(0.5, 0.5) on PIL.

    PIL rounds the resized image to uint8 where the tensor kernel keeps floats: single pixels may differ by
    one grey level (2/255 in normalised units); the mean difference stays far below that.
    """
    from PIL import Image

    reference = transforms.Compose([transforms.Resize((256, 256)), transforms.CenterCrop(224), transforms.ToTensor(),
                                    transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    processor = DmueImageProcessor()
    face = harness.synthetic_face(256)
    for image in (face, face.resize((300, 240), Image.BICUBIC), face.resize((120, 150), Image.BICUBIC)):
        ours = processor(image, return_tensors="pt")["pixel_values"][0]
        expected = reference(image)
        assert ours.shape == expected.shape == (3, 224, 224)
        grey_levels = (ours - expected).abs() * 0.5 * 255
        assert grey_levels.max() <= 1.0 + 1e-3, grey_levels.max()
        assert grey_levels.mean() < 0.05, grey_levels.mean()


def test_save_load_remote_code_and_pipeline(tmp_path):
    torch.manual_seed(0)
    model = DmueForImageClassification(DmueConfig(id2label=id2label("affectnet-8")))
    model.train()
    with torch.no_grad():  # non-trivial BN running statistics
        model(pixel_values=torch.randn(4, 3, 64, 64))
    model.eval()
    pixel_values = torch.randn(2, 3, 64, 64)
    harness.check_save_load_roundtrip(model, pixel_values, tmp_path)
    harness.check_remote_code(model, DmueImageProcessor(), pixel_values, tmp_path)
    predictions = harness.check_pipeline(model, DmueImageProcessor(), tmp_path)
    assert {p["label"] for p in predictions} == set(get_label_names("affectnet-8"))


def test_trainer_two_steps_with_aux_branches(tmp_path):
    from hf_fer.data.synthetic import make_synthetic_fer
    from transformers import Trainer, TrainingArguments

    processor = DmueImageProcessor(size={"height": 72, "width": 72}, crop_size={"height": 64, "width": 64})
    dataset = make_synthetic_fer(8, image_size=64, seed=0, label_space="affectnet-8")

    def to_model_inputs(batch):
        return {"pixel_values": processor(batch["image"], return_tensors="pt")["pixel_values"], "labels": batch["label"]}

    torch.manual_seed(0)
    model = DmueForImageClassification(DmueConfig(id2label=id2label("affectnet-8"), use_aux_branches=True))
    model.set_epoch(3)  # what a training loop does at the start of each epoch
    before = {name: p.detach().clone() for name, p in model.named_parameters() if name.startswith(("aux_branches.0.", "uncertainty_head.", "classifier."))}
    args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-3,
                             report_to=[], save_strategy="no", logging_steps=1, use_cpu=True, dataloader_num_workers=0,
                             remove_unused_columns=False)
    result = Trainer(model=model, args=args, train_dataset=dataset.with_transform(to_model_inputs)).train()
    # 8 classes, batches of 4: every batch misses classes (upstream's objective would be NaN)
    assert result.global_step == 2 and np.isfinite(result.training_loss)
    changed = {name for name, p in model.named_parameters() if name in before and not torch.equal(p, before[name])}
    assert any(n.startswith("aux_branches.0.") for n in changed) and any(n.startswith("uncertainty_head.") for n in changed)
    assert "classifier.weight" in changed
