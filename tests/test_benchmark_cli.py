"""``hf-fer benchmark``: FLOPs and parameters against hand counts, the report, the command line (toy model)."""
import json

import pytest
import torch

import test_evaluation_fixtures as fx
from hf_fer.benchmark import count_flops, count_parameters, format_report, matmul_peak, run_benchmark


@pytest.fixture(scope="module")
def toy():
    with fx.toy_architecture() as arch:
        yield arch


def test_flops_and_parameters_match_hand_counts(toy):
    model, _ = fx.make_toy_model(hidden_size=8)
    # conv 3->8, 3x3, no bias: 216 weights; BatchNorm: 16; linear 8->3: 27
    assert count_parameters(model) == 216 + 16 + 27
    # conv on 32x32 (padding 1): 8*3*9 multiply-adds per pixel; linear: 8*3; 2 FLOPs per multiply-add
    expected = 2 * (8 * 3 * 9 * 32 * 32 + 8 * 3)
    assert count_flops(model, torch.randn(1, 3, 32, 32)) == expected
    assert count_flops(model, torch.randn(2, 3, 32, 32)) == 2 * expected


def test_flops_of_fused_attention_are_counted():
    """scaled_dot_product_attention on dense inputs runs a fused CPU kernel FlopCounterMode cannot see; the count
    must still include QK^T and AV: 2 matmuls of N×N×d multiply-adds per head, 2 FLOPs each."""

    class Attention(torch.nn.Module):
        def forward(self, pixel_values):
            heads, tokens, dim = pixel_values.shape[1:]
            return torch.nn.functional.scaled_dot_product_attention(pixel_values, pixel_values, pixel_values)

    heads, tokens, dim = 2, 49, 16
    assert count_flops(Attention(), torch.randn(1, heads, tokens, dim)) == 2 * 2 * heads * tokens * tokens * dim


def test_matmul_peak_is_a_throughput():
    assert matmul_peak("cpu", size=64, iterations=2) > 1e6  # FLOP/s


def test_run_benchmark_reports_every_mode(toy):
    report = run_benchmark(["toy"], devices=["cpu"], batch_sizes=[2], modes=["eager", "channels_last", "bf16", "onnxruntime", "onnx_fused", "onnx_int8_matmul", "int8", "int8_mixed"],
                           warmup=0, iterations=2, matmul_size=64)
    (result,) = report["results"]
    # the default ToyConfig (what the benchmark builds) has transformers' default 2 labels
    assert result["params"] == 216 + 16 + (8 * 2 + 2) and tuple(result["image_size"]) == (32, 32)
    assert result["flops_per_image"] == 2 * (8 * 3 * 9 * 32 * 32 + 8 * 2)
    by_mode = {mode["mode"]: mode for mode in result["modes"]}
    for mode in ("eager", "channels_last", "bf16"):
        assert by_mode[mode]["status"] == "ok" and by_mode[mode]["images_per_second"] > 0, by_mode[mode]
        assert by_mode[mode]["latency_min_ms"] <= by_mode[mode]["latency_ms"] <= by_mode[mode]["latency_max_ms"]
    assert by_mode["eager"]["percent_of_peak"] is not None and by_mode["channels_last"]["percent_of_peak"] is not None
    # bf16 "% of peak" only against a native bf16 yardstick; an emulated run says so instead
    native = report["bf16"]["cpu"]["status"] == "native"
    assert (by_mode["bf16"]["percent_of_peak"] is not None) == native == ("bf16" in report["peaks"]["cpu"])
    assert native or "emulated" in by_mode["bf16"]["reason"]
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        assert by_mode["onnxruntime"]["status"] == "skipped" and "not installed" in by_mode["onnxruntime"]["reason"]
    assert report["peaks"]["cpu"]["fp32"] > 0
    # every path against fp32 eager of the same run: ratio, top-1 agreement (same faces), CPU time, peak RSS
    assert by_mode["eager"]["ratio_to_eager"] == 1.0 and by_mode["eager"]["top1_agreement"] == 1.0
    for mode in ("channels_last", "onnxruntime", "onnx_fused", "onnx_int8_matmul", "int8", "int8_mixed"):
        entry = by_mode[mode]
        assert entry["status"] == "ok", entry
        assert entry["ratio_to_eager"] == pytest.approx(entry["images_per_second"] / by_mode["eager"]["images_per_second"], rel=1e-2)
        assert 0 <= entry["top1_agreement"] <= 1 and entry["cpu_ms_per_call"] > 0 and entry["peak_rss_mb"] > 10
    assert by_mode["channels_last"]["top1_agreement"] == 1.0 and by_mode["onnxruntime"]["top1_agreement"] == 1.0  # same maths
    # a convolution-only toy: ONNX Runtime's transformer fusers find nothing, and say so
    assert "nothing matched" in by_mode["onnx_fused"]["reason"] and by_mode["onnx_fused"]["top1_agreement"] == 1.0
    text = format_report(report)
    assert "toy" in text and "eager" in text and "matmul peak on cpu" in text and "x eager" in text


def test_compile_mode_at_two_batch_sizes(toy):
    """One compiled module serves every batch size (it used to crash on the second: `compiled or ...` called
    Module.__len__); at least `iterations` calls are timed, more until they add up to `min_seconds`."""
    report = run_benchmark(["toy"], devices=["cpu"], batch_sizes=[1, 2], modes=["compile"], warmup=1, iterations=3,
                           matmul_size=64, min_seconds=0.05)
    (result,) = report["results"]
    assert [(m["batch_size"], m["status"]) for m in result["modes"]] == [(1, "ok"), (2, "ok")], result["modes"]
    for mode in result["modes"]:
        assert mode["timed_calls"] >= 3 and mode["timed_calls"] * mode["latency_max_ms"] >= 50
        assert 0 < mode["latency_min_ms"] <= mode["latency_ms"] <= mode["latency_max_ms"]
    assert "compile" in format_report(report)




def test_compile_mode_is_not_silently_eager_after_earlier_compiles(toy):
    """Every hf_fer model's forward goes through transformers' ``can_return_tuple`` wrapper, one code object, so
    the architectures share Dynamo's per-code cache: once earlier compiles fill it (8 entries), Dynamo silently runs
    eager, and "compile" measured eager for DACL and DMUE in a full run. The benchmark starts each architecture
    from an empty cache. Here the limit is 2 and the toy's forward already holds 2 graphs when the benchmark runs."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    with torch._dynamo.config.patch(recompile_limit=2):
        model, _ = fx.make_toy_model(hidden_size=8)
        earlier = torch.compile(model.eval(), dynamic=False)
        with torch.inference_mode():
            for batch in (3, 4):
                earlier(pixel_values=torch.randn(batch, 3, 32, 32))
        before = counters["stats"]["unique_graphs"]
        report = run_benchmark(["toy"], devices=["cpu"], batch_sizes=[1], modes=["compile"], warmup=0, iterations=1,
                               matmul_size=64, min_seconds=0)
    assert report["results"][0]["modes"][0]["status"] == "ok"
    assert counters["stats"]["unique_graphs"] == before + 1  # the benchmark's graph was compiled, not skipped


def _flags_from_proc_cpuinfo() -> set[str]:
    """The first processor's flags, read here independently of the library."""
    text = open("/proc/cpuinfo").read()
    for block in text.split("\n\n"):
        for line in block.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):
                return set(value.split())
    raise AssertionError("no flags line in /proc/cpuinfo")


def test_bf16_support_agrees_with_the_cpu_flags():
    """Native bf16 exactly when the CPU advertises bf16 arithmetic (x86 avx512_bf16 / amx_bf16, Arm bf16)."""
    import platform

    from hf_fer.benchmark import bf16_support, cpu_flags

    flags = _flags_from_proc_cpuinfo()
    arm = platform.machine().lower() in ("aarch64", "arm64")
    expected_native = "bf16" in flags if arm else bool({"avx512_bf16", "amx_bf16"} & flags)
    support = bf16_support("cpu")
    assert support.native == expected_native, (support, sorted(flags))
    assert support.status == ("native" if expected_native else "emulated") and support.usable
    assert set(cpu_flags()) <= flags and ("avx2" in cpu_flags()) == ("avx2" in flags)
    assert bf16_support("meta").status == "unsupported"


def test_benchmark_cli_quick_writes_json(toy, tmp_path, capsys):
    from hf_fer.cli import main

    out = tmp_path / "bench.json"
    assert main(["benchmark", "--quick", "--arch", "toy", "--devices", "cpu", "--modes", "eager", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["batch_sizes"] == [1] and report["results"][0]["arch"] == "toy"
    assert main(["benchmark", "--arch", "no_such_arch"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "unknown architecture" in err


def test_benchmark_help_has_examples(capsys):
    from hf_fer.cli import main

    assert main(["benchmark", "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "--quick" in out and "--devices" in out


def test_training_throughput_mode(capsys):
    from hf_fer.benchmark import main

    assert main(["--train", "--arch", "dmue", "--batch-sizes", "2", "--image-size", "64", "--warmup", "0", "--iterations", "1", "--devices", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "train img/s" in out and "dmue" in out
    row = [line for line in out.splitlines() if line.startswith("dmue")][0]
    assert float(row.split()[5]) > 0


def test_pipeline_benchmark_reports_every_stage():
    """`hf-fer benchmark --pipeline`: per-stage figures for the photo with 5 faces, given as a file and as a decoded
    array, and the overhead with and without decoding (the figures themselves are the benchmark's to print)."""
    from hf_fer.benchmark import benchmark_pipeline, format_pipeline_report

    report = benchmark_pipeline(batch=2, iterations=1, warmup=0)
    rows = report["runs"]
    assert [(r["photos"], r["input"]) for r in rows] == [(1, "file"), (1, "file"), (2, "file"), (2, "file"), (2, "array")]
    for row in rows:
        assert row["faces"] == row["faces_found"] == 5 * row["photos"], row
        assert 0 < row["detector_forward_ms"] + row["classifier_forward_ms"] < row["end_to_end_ms"]
        # overhead is measured against the very same forward calls replayed alone (not their in-pipeline times)
        assert row["replayed_calls"] == row["forward_calls"] >= 2
        forwards = row["forwards_alone_ms"]
        assert forwards > 0  # not `< end_to_end`: a replay timed on a busy machine can take longer (a timing, not a fact)
        assert row["overhead_percent"] == pytest.approx(100 * (row["end_to_end_ms"] - forwards) / row["end_to_end_ms"])
        assert row["overhead_excluding_decode_percent"] == pytest.approx(row["overhead_percent"] - 100 * row["decode_ms"] / row["end_to_end_ms"])
        assert 0 < row["decode_ms"] and row["alignment_ms"] > 0
    text = format_pipeline_report(report, None)
    assert "w/o decode" in text and "fwd alone" in text and "array" in text and report["cpu"] in text
