"""The architecture registry is the one source of per-architecture facts, and those facts fit the code they describe."""
import re
from pathlib import Path

import pytest
import torch

from hf_fer import labels
from hf_fer.models import ARCHITECTURES, CardInfo, ReferenceCost

SRC = Path(__file__).resolve().parents[1] / "src" / "hf_fer"
BUILT_IN = ("poster_v2", "arm", "dacl", "dmue", "vt_nr", "mini_xception")  # ★ architecture names


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_architecture_has_its_card_facts_and_template(name):
    arch = ARCHITECTURES[name]
    assert isinstance(arch.card, CardInfo) and arch.card.upstream_code.startswith("https://")
    assert arch.card_template is not None and arch.card_template.name == f"{name}.md"
    assert isinstance(arch.reference_cost, ReferenceCost)
    for benchmark in [result.benchmark for result in arch.paper_results] + list(arch.upstream_benchmarks):
        assert benchmark in labels.BENCHMARKS, f"{name}: unknown benchmark key {benchmark!r}"


@pytest.mark.parametrize("name", BUILT_IN)
def test_reference_cost_is_the_parameter_count_of_the_model_people_run(name):
    """The upstream counts (shared/specs) against our model built on the meta device (no memory, no init cost)."""
    arch = ARCHITECTURES[name]
    with torch.device("meta"):
        model = arch.model_class(arch.config_class(**arch.benchmark_config))
    assert sum(p.numel() for p in model.parameters()) == arch.reference_cost.params


@pytest.mark.parametrize("name", BUILT_IN)
def test_config_overrides_name_real_fields_and_change_them(name):
    """An override with a misspelt key would silently build the default model: each key must be a config field
    whose default differs from the override."""
    arch = ARCHITECTURES[name]
    default = arch.config_class()
    for overrides in (arch.training_config, arch.benchmark_config):
        for key, value in overrides.items():
            assert key in default.to_dict(), f"{name}: {key!r} is not a field of {arch.config_class.__name__}"
            assert getattr(default, key) != value and getattr(arch.config_class(**overrides), key) == value


def test_no_per_architecture_dictionaries_outside_the_registry():
    """The model card, the benchmark and the converter read the registry instead of keeping their own tables."""
    key = re.compile(r"""["'](%s)["']\s*:""" % "|".join(BUILT_IN))
    offenders = []
    for relative in ("hub/model_card.py", "hub/push.py", "benchmark.py", "conversion.py"):
        for number, line in enumerate((SRC / relative).read_text().splitlines(), 1):
            if key.search(line):
                offenders.append(f"{relative}:{number}: {line.strip()}")
    assert not offenders, "per-architecture tables outside hf_fer.models.ARCHITECTURES:\n" + "\n".join(offenders)
