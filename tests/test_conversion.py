"""hf_fer.conversion.load_upstream_checkpoint: reads upstream containers, never executes pickled code."""
import os
import pickle
import sys
import zipfile

import numpy as np
import pytest
import torch

from hf_fer.conversion import UnsafeCheckpointError, load_upstream_checkpoint, resolve_id2label


class RecorderMeter:
    """Stand-in for the helper class POSTER V2's training script pickles (defined in its __main__)."""

    def __init__(self, epochs):
        self.epoch_losses = np.zeros((epochs, 2), dtype=np.float32)
        self.epoch_accuracy = np.arange(epochs * 2, dtype=np.float64).reshape(epochs, 2)
        self.current_epoch = 3


def save_with_main_class(obj, path, cls):
    """torch.save while ``cls`` pretends to live in ``__main__`` (as in the upstream training script)."""
    main = sys.modules["__main__"]
    old_module, had_attr = cls.__module__, hasattr(main, cls.__name__)
    cls.__module__ = "__main__"
    setattr(main, cls.__name__, cls)
    try:
        torch.save(obj, path)
    finally:
        cls.__module__ = old_module
        if not had_attr:
            delattr(main, cls.__name__)


def test_container_with_pickled_helper_objects(tmp_path):
    weights = {"module.conv.weight": torch.randn(4, 3, 3, 3), "module.fc.bias": torch.randn(2)}
    container = {
        "epoch": 12,
        "state_dict": weights,
        "best_acc": torch.tensor(92.21),
        "optimizer": {"state": {0: {"old_p": torch.randn(2)}}, "param_groups": [{"lr": 3.5e-5, "params": [0]}]},
        "recorder": RecorderMeter(5),
    }
    path = tmp_path / "poster_like.pth"
    save_with_main_class(container, path, RecorderMeter)
    with pytest.raises(Exception):  # plain weights_only refuses the file: that is why the safe loader exists
        torch.load(path, weights_only=True)

    checkpoint = load_upstream_checkpoint(path)
    assert set(checkpoint) == {"conv.weight", "fc.bias"}
    assert torch.equal(checkpoint["conv.weight"], weights["module.conv.weight"])
    assert checkpoint.container_key == "state_dict" and checkpoint.stripped_prefix == "module."
    assert checkpoint.metadata["epoch"] == 12
    assert float(checkpoint.metadata["best_acc"]) == pytest.approx(92.21)
    assert checkpoint.stubbed_globals == ["__main__.RecorderMeter"]
    recorder = checkpoint.metadata["recorder"]
    assert type(recorder) is not RecorderMeter  # an inert stub, not the real class
    np.testing.assert_array_equal(recorder.epoch_accuracy, np.arange(10, dtype=np.float64).reshape(5, 2))


@pytest.mark.parametrize("key", ["model_state_dict", "model", None])
def test_known_containers_and_bare_state_dicts(tmp_path, key):
    weights = {"a.weight": torch.ones(2, 2), "a.bias": torch.zeros(2)}
    obj = weights if key is None else {key: weights, "iter": 3}
    torch.save(obj, tmp_path / "ckpt.pth")
    checkpoint = load_upstream_checkpoint(tmp_path / "ckpt.pth")
    assert set(checkpoint) == set(weights) and checkpoint.container_key == key
    assert checkpoint.stripped_prefix is None


def test_missing_and_unexpected_keys_are_named(tmp_path):
    torch.save({"state_dict": {"a": torch.ones(1), "b": torch.ones(1)}}, tmp_path / "c.pth")
    missing, unexpected = load_upstream_checkpoint(tmp_path / "c.pth").check_keys(["a", "c"])
    assert missing == ["c"] and unexpected == ["b"]


def test_no_state_dict_is_a_clear_error(tmp_path):
    torch.save({"epoch": 1, "notes": "nothing here"}, tmp_path / "empty.pth")
    with pytest.raises(ValueError, match="no state dict found.*epoch"):
        load_upstream_checkpoint(tmp_path / "empty.pth")
    with pytest.raises(FileNotFoundError):
        load_upstream_checkpoint(tmp_path / "absent.pth")


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("wrap", ["torch_zip", "plain_pickle"])
def test_code_executing_pickle_is_refused_and_nothing_runs(tmp_path, wrap):
    marker = tmp_path / "pwned"
    Exploit.marker = marker
    path = tmp_path / "evil.pth"
    payload = {"state_dict": {"w": torch.ones(1)}, "extra": Exploit()}
    if wrap == "torch_zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises((UnsafeCheckpointError, ValueError), match="system|refus|could not read"):
        load_upstream_checkpoint(path)
    assert not marker.exists(), "pickled code was executed"


def test_stub_that_would_be_called_is_refused(tmp_path):
    """A global that is *called* during unpickling (REDUCE) is refused even when it is not a known danger."""
    marker = tmp_path / "called"

    class Sneaky:
        def __reduce__(self):
            return (Helper, ("payload",))

    class Helper:
        def __init__(self, arg):  # pragma: no cover - must never run
            marker.write_text(arg)

    Helper.__module__ = Sneaky.__module__ = "__main__"
    Helper.__qualname__, Sneaky.__qualname__ = "Helper", "Sneaky"
    main = sys.modules["__main__"]
    main.Helper = Helper
    try:
        torch.save({"state_dict": {"w": torch.ones(1)}, "x": Sneaky()}, tmp_path / "sneaky.pth")
    finally:
        del main.Helper
    with pytest.raises(UnsafeCheckpointError, match="calls __main__.Helper"):
        load_upstream_checkpoint(tmp_path / "sneaky.pth")
    assert not marker.exists()


def test_resolve_id2label():
    assert resolve_id2label(None, "raf-db", None)[0] == "surprise"
    assert resolve_id2label(3, None, "a,b,c") == {0: "a", 1: "b", 2: "c"}
    assert resolve_id2label(None, None, '{"0": "x", "1": "y"}') == {0: "x", 1: "y"}
    with pytest.raises(ValueError, match="disagrees"):
        resolve_id2label(8, "raf-db", None)


def test_shared_checkpoint_checks_name_the_problem():
    import torch

    from hf_fer.conversion import classes_from_head, require_keys

    with pytest.raises(ValueError, match=r"not an ARM checkpoint: no 'fc.weight' entry. Keys found: \['other'\]"):
        require_keys({"other": 1}, "ARM", ("fc.weight",))
    head = torch.zeros(7, 512)
    assert classes_from_head("fc.weight", head, None, None) == 7
    with pytest.raises(ValueError, match=r"--num-labels 8 but the checkpoint's fc.weight has 7 classes"):
        classes_from_head("fc.weight", head, 8, None)
    with pytest.raises(ValueError, match="3 class names given but the checkpoint has 7 classes"):
        classes_from_head("fc.weight", head, None, {0: "a", 1: "b", 2: "c"})
    with pytest.raises(ValueError, match=r"must be 2-D \[num_classes, 512\]"):
        classes_from_head("fc.weight", torch.zeros(7), None, None, features="512")


@pytest.mark.parametrize("arch, choices", [("arm", "raf-db, affectnet-7, sfew"), ("dacl", "raf-db, affectnet-7"),
                                           ("poster_v2", "raf-db, affectnet-7, affectnet-8, caer-s"), ("dmue", "raf-db, ferplus, affectnet-8")])
def test_multi_benchmark_architectures_need_the_class_order(tmp_path, arch, choices):
    from hf_fer.conversion import main

    torch.save({"fc.weight": torch.zeros(7, 4)}, tmp_path / "c.pth")
    with pytest.raises(ValueError, match=rf"{arch} was trained upstream on several benchmarks.*pass --dataset \(one of {choices}\) or --id2label"):
        main(["--arch", arch, "--checkpoint", str(tmp_path / "c.pth"), "--output", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_legacy_format_with_pickled_helper_objects_converts_like_zip(tmp_path):
    container = {"epoch": 7, "state_dict": {"module.fc.weight": torch.randn(7, 4)}, "recorder": RecorderMeter(3)}
    path = tmp_path / "legacy.pth"
    main = sys.modules["__main__"]
    old_module, had_attr = RecorderMeter.__module__, hasattr(main, "RecorderMeter")
    RecorderMeter.__module__, main.RecorderMeter = "__main__", RecorderMeter
    try:
        torch.save(container, path, _use_new_zipfile_serialization=False)
    finally:
        RecorderMeter.__module__ = old_module
        if not had_attr:
            del main.RecorderMeter
    assert not zipfile.is_zipfile(path)
    checkpoint = load_upstream_checkpoint(path)
    assert torch.equal(checkpoint["fc.weight"], container["state_dict"]["module.fc.weight"])
    assert checkpoint.stubbed_globals == ["__main__.RecorderMeter"] and checkpoint.metadata["epoch"] == 7
    np.testing.assert_array_equal(checkpoint.metadata["recorder"].epoch_accuracy, np.arange(6, dtype=np.float64).reshape(3, 2))


def test_empty_and_truncated_files_say_so(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty.pth: the file is empty \(0 bytes\)"):
        load_upstream_checkpoint(tmp_path / "empty.pth")
    torch.save({"state_dict": {"w": torch.ones(100)}}, tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut.pth: a truncated zip archive"):
        load_upstream_checkpoint(tmp_path / "cut.pth")
    torch.save({"state_dict": {"w": torch.ones(100)}}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    data = (tmp_path / "legacy.pth").read_bytes()
    for size in (5, 200):
        (tmp_path / "cut_legacy.pth").write_bytes(data[:size])
        with pytest.raises(ValueError, match=r"cut_legacy.pth: the file is truncated"):
            load_upstream_checkpoint(tmp_path / "cut_legacy.pth")
    (tmp_path / "cut_legacy.pth").write_bytes(data[:-20])  # cut inside the tensor bytes after the pickles
    with pytest.raises(ValueError, match=r"truncated or damaged"):
        load_upstream_checkpoint(tmp_path / "cut_legacy.pth")


def _deflate_bomb(path, inflated_mib=1536):
    """A valid zip whose ``archive/data.pkl`` deflates 1.5 GiB of zeros into ~1.5 MB (built without inflating anything)."""
    import struct
    import zlib

    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(b"\0" * 2**20) + compressor.flush(zlib.Z_FULL_FLUSH)  # self-contained: repeatable
    tail = compressor.flush()
    crc, zeros = 0, b"\0" * 2**26
    for _ in range(inflated_mib // 64):
        crc = zlib.crc32(zeros, crc)
    size, compressed = inflated_mib * 2**20, len(block) * inflated_mib + len(tail)
    name = b"archive/data.pkl"
    local = struct.pack("<4s5H3L2H", b"PK\3\4", 20, 0, 8, 0, 0, crc, compressed, size, len(name), 0) + name
    with open(path, "wb") as handle:
        handle.write(local)
        for _ in range(inflated_mib):
            handle.write(block)
        handle.write(tail)
        central = struct.pack("<4s6H3L5H2L", b"PK\1\2", 20, 20, 0, 8, 0, 0, crc, compressed, size, len(name), 0, 0, 0, 0, 0, 0) + name
        offset = handle.tell()
        handle.write(central)
        handle.write(struct.pack("<4s4H2LH", b"PK\5\6", 0, 0, 1, 1, len(central), offset, 0))


def test_deflate_bomb_is_refused_quickly_without_inflating(tmp_path):
    import resource
    import time

    path = tmp_path / "bomb.pth"
    _deflate_bomb(path)
    assert os.path.getsize(path) < 3 * 2**20
    with zipfile.ZipFile(path) as archive:  # a real bomb: a plain reader would inflate it
        assert archive.getinfo("archive/data.pkl").file_size == 1536 * 2**20
        with archive.open("archive/data.pkl") as member:
            assert member.read(2**20) == b"\0" * 2**20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(UnsafeCheckpointError, match=r"bomb.pth: member archive/data.pkl would inflate from [\d,]+ to 1,610,612,736 bytes.*decompression bomb"):
        load_upstream_checkpoint(path)
    assert time.perf_counter() - started < 2
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 < 100 * 2**20


def test_disguised_pickles_are_refused_in_one_line_and_nothing_runs(tmp_path):
    """Two ways past a naive pre-scan: a malicious legacy pickle with a harmless torch zip appended (zipfile sees
    the zip, torch.load reads the pickle), and STACK_GLOBAL taking its names from the memo behind decoy strings.
    Both are named as unsafe in one line (torch's own multi-line advice to retry with weights_only=False is not
    passed on) and nothing is executed."""
    marker = tmp_path / "pwned"
    Exploit.marker = marker
    benign = tmp_path / "benign.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}}, benign)
    polyglot = tmp_path / "polyglot.pth"
    polyglot.write_bytes(pickle.dumps({"state_dict": {"w": torch.ones(1)}, "x": Exploit()}, protocol=2) + benign.read_bytes())
    assert zipfile.is_zipfile(polyglot)
    command = f"touch {marker}".encode()
    # PROTO 4; 'os' MEMOIZE; 'system' MEMOIZE; POP POP; decoy strings; BINGET 0, BINGET 1; STACK_GLOBAL; call it
    memo_trick = tmp_path / "memo.pth"
    memo_trick.write_bytes(b"\x80\x04\x8c\x02os\x94\x8c\x06system\x9400\x8c\x05numpy\x8c\x07ndarray00h\x00h\x01\x93"
                           + b"\x8c" + bytes([len(command)]) + command + b"\x85R.")
    for path, named in ((polyglot, "system"), (memo_trick, "'os.system'")):
        with pytest.raises(UnsafeCheckpointError) as caught:
            load_upstream_checkpoint(path)
        message = str(caught.value)
        assert named in message and "\n" not in message and "weights_only` set to `False`" not in message, message
    assert not marker.exists(), "pickled code was executed"


def test_a_damaged_byte_inside_a_tensor_is_caught_by_the_zip_crc(tmp_path):
    """torch.load does not check the archive's CRC-32s: one flipped byte in a weight converted silently."""
    path = tmp_path / "model.pth"
    torch.save({"state_dict": {"weight": torch.arange(4096, dtype=torch.float32)}}, path)
    with zipfile.ZipFile(path) as archive:
        member = next(info for info in archive.infolist() if "/data/" in info.filename)
        offset = member.header_offset + 30 + len(member.filename.encode()) + len(member.extra)  # local header, then data
    data = bytearray(path.read_bytes())
    data[offset + 1000] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"member {member.filename} fails its CRC-32 check"):
        load_upstream_checkpoint(path)


def test_nan_weights_are_refused_naming_the_tensors(tmp_path):
    """A diverged run's checkpoint converted with exit 0 into a model that outputs NaN."""
    path = tmp_path / "diverged.pth"
    torch.save({"state_dict": {"fc.weight": torch.tensor([1.0, float("nan")]), "fc.bias": torch.ones(2),
                               "bn.num_batches_tracked": torch.tensor(3)}}, path)
    with pytest.raises(ValueError, match=r"1 tensor\(s\) hold NaN or infinite values \(fc.weight\)"):
        load_upstream_checkpoint(path)
