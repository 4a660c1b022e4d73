"""Converter of the toy "upstream" layout: features.0 (conv), features.1 (BN), fc; aux_head is dead."""
import argparse

import torch

from hf_fer.conversion import ConversionReport

from .configuration_toy import ToyConfig
from .image_processing_toy import ToyImageProcessor
from .modeling_toy import ToyForImageClassification

RENAMES = {"features.0.": "block.conv.", "features.1.": "block.norm.", "fc.": "classifier."}
DEAD_PREFIXES = ("aux_head.",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--toy-hidden-size", type=int, default=None)


def convert(state_dict, *, num_labels, id2label, options):
    report = ConversionReport()
    mapped = {}
    for key, tensor in state_dict.items():
        if key.startswith(DEAD_PREFIXES):
            report.dropped.append(key)
            continue
        for old, new in RENAMES.items():
            if key.startswith(old):
                mapped[new + key[len(old):]] = tensor
                report.loaded.append(key)
                break
        else:
            report.unexpected.append(key)
    head = mapped["classifier.weight"]
    num_labels = num_labels or head.shape[0]
    id2label = id2label or {i: f"class_{i}" for i in range(num_labels)}
    config = ToyConfig(hidden_size=head.shape[1], num_labels=num_labels, id2label=id2label,
                       label2id={v: k for k, v in id2label.items()})
    model = ToyForImageClassification(config)
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    report.missing.extend(missing)
    report.unexpected.extend(unexpected)
    if report.missing or report.unexpected:
        raise ValueError(f"checkpoint does not fit the toy model: missing {report.missing}, unexpected {report.unexpected}")
    return model.eval(), report


def default_image_processor(config):
    return ToyImageProcessor()
