"""A converted folder loads with ``AutoModel`` as remote code in a Python without hf_fer (issue 16, base models).

``save_with_remote_code`` names the base model in ``auto_map``; without it ``AutoModel.from_pretrained(...,
trust_remote_code=True)`` on a Hub checkpoint fails for anyone who has not installed hf_fer.
"""
import json
import os
import subprocess
import sys
import textwrap

import torch
from tiny_models import TINY, input_shape, tiny_config

from hf_fer.conversion import save_with_remote_code
from hf_fer.models import ARCHITECTURES

_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["hf_fer"] = None  # any `import hf_fer` now raises ImportError
    import torch
    from transformers import AutoModel
    for folder, shape in zip(sys.argv[1::2], sys.argv[2::2]):
        model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        assert type(model).__name__.endswith("Model") and "ForImageClassification" not in type(model).__name__
        with torch.no_grad():
            out = model(pixel_values=torch.zeros([int(s) for s in shape.split(",")]))
        print("BASE_OK", type(model).__name__, type(out).__name__)
    """
)


def test_every_architecture_loads_its_base_model_as_remote_code(tmp_path):
    argv = []
    for arch in sorted(TINY):
        model = ARCHITECTURES[arch].model_class(tiny_config(arch)).eval()
        folder = tmp_path / arch
        save_with_remote_code(model, None, folder)
        auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
        assert auto_map.get("AutoModel", "").endswith("Model"), (arch, auto_map)
        assert "ForImageClassification" in auto_map["AutoModelForImageClassification"], (arch, auto_map)
        argv += [str(folder), ",".join(map(str, input_shape(arch, 1)))]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "hf_modules"), PYTHONPATH="")
    result = subprocess.run([sys.executable, "-c", _SCRIPT, *argv], capture_output=True, text=True, env=env,
                            cwd=str(tmp_path), timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.count("BASE_OK") == len(TINY), result.stdout
