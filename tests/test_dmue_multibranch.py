"""DMUE training-model parity: a 9-branch upstream snapshot converted with ``--keep-aux-branches`` reproduces
every output and loss term of upstream's "sp_confidence" forward (``tests/fixtures/parity/dmue/multibranch``:
16 images, two per class, upstream model in eval mode), through ``import hf_fer`` and through remote code.

The fixture's upstream snapshot is regenerated, wrapped with ``module.`` prefixes as upstream's DataParallel
training saved it, converted once for the module and loaded with ``AutoModelForImageClassification``.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import OrderedDict

import pytest
import torch
from safetensors.torch import load_file

import harness
import hf_fer  # noqa: F401  (registers the Auto classes)

FIXTURE = "dmue/multibranch"
ATOL_LOGITS = 1e-4  # logits and Gram matrices (measured ~2e-6)
ATOL_LOSS = 1e-3  # score, weighted logits and losses: the per-row min-max amplifies rounding (measured 1.1e-4)
NUM_CLASSES = 8


@pytest.fixture(scope="module")
def fixture_io():
    return harness.load_fixture_io(FIXTURE)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dmue_multibranch")
    state_dict = harness.load_fixture_state_dict(FIXTURE)
    snapshot = OrderedDict(("module." + key, value) for key, value in state_dict.items())
    torch.save(snapshot, folder / "ep7_b3400_acc0.6285.pth")
    return harness.convert_with_cli("dmue", folder / "ep7_b3400_acc0.6285.pth", folder / "converted", ["--keep-aux-branches", "--dataset", "affectnet-8"])


@pytest.fixture(scope="module")
def model_and_outputs(converted, fixture_io):
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(converted).eval()
    with torch.no_grad():
        outputs = model(pixel_values=fixture_io["pixel_values"], labels=fixture_io["labels"], epoch=0)
    return model, outputs


def upstream_view(outputs) -> dict[str, torch.Tensor]:
    """Our outputs under the fixture's (upstream) names."""
    view = {
        "main_logits": outputs.logits, "score": outputs.uncertainty_score, "atten_logits": outputs.weighted_logits,
        "soft_targets": outputs.soft_targets, "loss_ce": outputs.loss_ce, "loss_soft": outputs.loss_soft,
        "loss_aux": outputs.loss_aux, "loss_sp": outputs.loss_sp, "loss_total_epoch0": outputs.loss,
    }
    for c in range(NUM_CLASSES):
        view[f"aux_logits.{c}"] = outputs.aux_logits[c]
        view[f"aux_targets.{c}"] = outputs.aux_targets[c]
        view[f"softlabel_logits.{c}"] = outputs.latent_logits[c]
        view[f"gram_aux.{c}"] = outputs.aux_gram[c]
        view[f"gram_main.{c}"] = outputs.target_gram[c]
    return view


def assert_matches_upstream(view: dict[str, torch.Tensor], fixture_io, source: str) -> None:
    for name, ours in view.items():
        expected = fixture_io[name]
        ours = ours.reshape(expected.shape) if ours.numel() == expected.numel() else ours
        if name.startswith("aux_targets"):
            assert torch.equal(ours, expected), f"{source} {name}: {ours.tolist()} != {expected.tolist()}"
            continue
        loose = name.startswith(("score", "atten_logits", "loss", "soft_targets"))
        harness.assert_close(ours, expected, atol=ATOL_LOSS if loose else ATOL_LOGITS, what=f"{source} {name}")


def test_parameter_count_and_layout(model_and_outputs):
    model, _ = model_and_outputs
    assert model.config.use_aux_branches and model.config.num_aux_branches == NUM_CLASSES
    assert model.num_parameters() == 78_360_274  # spec §3 / §14
    assert len(model.state_dict()) == 379


def test_every_output_and_loss_term_matches_upstream(model_and_outputs, fixture_io):
    _, outputs = model_and_outputs
    assert_matches_upstream(upstream_view(outputs), fixture_io, "hf_fer")
    # the logits of the training model are the target branch's ("normal" phase = the deployed model)
    harness.assert_close(outputs.logits, fixture_io["logits_normal"], atol=ATOL_LOGITS, what="logits vs normal phase")


def test_total_loss_at_a_later_epoch(model_and_outputs, fixture_io):
    """Epoch 10 with ramp_a 6: ramp-up finished, the auxiliary loss ramped down to exp(-0.16)."""
    model, outputs = model_and_outputs
    loss, up, down = model.combine_losses(outputs.loss_ce, outputs.loss_soft, outputs.loss_aux, outputs.loss_sp, epoch=10)
    assert up == 1.0 and abs(down - 0.852143788966) < 1e-9
    harness.assert_close(loss.reshape(1), fixture_io["loss_total_epoch10"], atol=ATOL_LOSS, what="loss at epoch 10")
    model.set_epoch(10)  # the state the forward uses when no `epoch` is passed
    try:
        assert model.combine_losses(outputs.loss_ce, outputs.loss_soft, outputs.loss_aux, outputs.loss_sp)[0].item() == loss.item()
    finally:
        model.set_epoch(0)


def test_to_inference_model_is_the_target_branch(model_and_outputs, fixture_io, tmp_path):
    model, outputs = model_and_outputs
    deployed = model.to_inference_model()
    assert deployed.num_parameters() == 11_181_632 and not deployed.config.use_aux_branches
    pixel_values = fixture_io["pixel_values"][:4]  # eval-mode logits are per image: 4 images suffice
    with torch.no_grad():
        harness.assert_close(deployed(pixel_values=pixel_values).logits, fixture_io["logits_normal"][:4], atol=ATOL_LOGITS)
    # save_pretrained writes either model
    model.save_pretrained(tmp_path / "deployed", target_branch_only=True)
    from transformers import AutoModelForImageClassification

    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path / "deployed").eval()
    assert reloaded.num_parameters() == 11_181_632
    with torch.no_grad():
        assert torch.equal(reloaded(pixel_values=pixel_values).logits, deployed(pixel_values=pixel_values).logits)


_REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["hf_fer"] = None  # any `import hf_fer` now raises ImportError
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForImageClassification
    folder, inputs, outputs = sys.argv[1:4]
    model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    batch = load_file(inputs)
    with torch.no_grad():
        out = model(pixel_values=batch["pixel_values"], labels=batch["labels"], epoch=0)
    result = {"logits": out.logits, "uncertainty_score": out.uncertainty_score, "weighted_logits": out.weighted_logits,
              "soft_targets": out.soft_targets, "loss": out.loss, "loss_ce": out.loss_ce, "loss_soft": out.loss_soft,
              "loss_aux": out.loss_aux, "loss_sp": out.loss_sp}
    for c in range(len(out.aux_logits)):
        for field in ("aux_logits", "aux_targets", "latent_logits", "aux_gram", "target_gram"):
            result[f"{field}.{c}"] = getattr(out, field)[c]
    save_file({k: v.contiguous() for k, v in result.items()}, outputs)
    print("REMOTE_OK")
    """
)


class _Namespace:
    """Remote outputs (a flat safetensors file) seen through the output object's attribute names."""

    def __init__(self, flat: dict[str, torch.Tensor]):
        self.__dict__.update({k: v for k, v in flat.items() if "." not in k})
        for field in ("aux_logits", "aux_targets", "latent_logits", "aux_gram", "target_gram"):
            setattr(self, field, [flat[f"{field}.{c}"] for c in range(NUM_CLASSES)])


def test_remote_code_training_model_matches_upstream(converted, fixture_io, tmp_path):
    """The saved training model, loaded with trust_remote_code in a Python without hf_fer, gives upstream's terms."""
    from safetensors.torch import save_file

    inputs, outputs = tmp_path / "inputs.safetensors", tmp_path / "outputs.safetensors"
    save_file({"pixel_values": fixture_io["pixel_values"], "labels": fixture_io["labels"]}, str(inputs))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "hf_modules"), PYTHONPATH="")
    result = subprocess.run([sys.executable, "-c", _REMOTE_SCRIPT, str(converted), str(inputs), str(outputs)],
                            capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=600)
    assert result.returncode == 0 and "REMOTE_OK" in result.stdout, f"{result.stdout}\n{result.stderr[-4000:]}"
    assert_matches_upstream(upstream_view(_Namespace(load_file(str(outputs)))), fixture_io, "remote code")
