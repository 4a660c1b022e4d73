"""Videos: frames sampled in bounded memory, faces tracked with stable ids, annotated video, IoU tracker."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

FACES = Path(__file__).parent / "fixtures" / "faces"


def make_video(path: Path, num_frames: int, size=(640, 432), rate: int = 25, photo: str = "sample1.jpg") -> Path:
    """A test photo slowly panned and zoomed on a grey canvas (all its faces stay in view), written with PyAV."""
    import av

    width, height = size
    base = Image.open(FACES / photo).convert("RGB")
    base = base.resize((width, round(base.height * width / base.width)))
    container = av.open(str(path), mode="w")
    stream = container.add_stream("mpeg4", rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    for index in range(num_frames):
        phase = 2 * np.pi * index / 400.0  # slow enough for IoU tracking at every 20th frame
        scale = 0.9 + 0.05 * np.sin(phase)
        frame_image = base.resize((round(base.width * scale), round(base.height * scale)))
        canvas = Image.new("RGB", size, (128, 128, 128))
        canvas.paste(frame_image, (round(20 * np.sin(phase)) + 20, round(10 * np.cos(phase)) + 10))
        for packet in stream.encode(av.VideoFrame.from_image(canvas)):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("video") / "panned.mp4", 200)


def test_frame_sampling_every_n_and_fps(video):
    from hf_fer.faces.video import iter_video_frames

    frames = iter_video_frames(video, every_n_frames=10)
    assert not isinstance(frames, list)  # a generator: nothing decoded ahead
    assert [f.index for f in frames] == list(range(0, 200, 10))
    by_fps = list(iter_video_frames(video, fps=5.0))  # 25 fps video → every 5th frame
    assert [f.index for f in by_fps] == list(range(0, 200, 5))
    assert by_fps[1].time == pytest.approx(0.2, abs=1e-3) and by_fps[0].image.size == (640, 432)
    assert [f.index for f in iter_video_frames(video, every_n_frames=10, max_frames=3)] == [0, 10, 20]


def test_predict_video_ids_stable_and_annotated_video(video, tmp_path, capsys):
    import av

    from hf_fer.cli import main

    out = tmp_path / "faces.jsonl"
    annotated = tmp_path / "annotated"
    assert main(["predict", str(video), "--every-n-frames", "20", "--output", str(out), "--annotate", str(annotated),
                 "--top-k", "2", "--smoothing", "0.5"]) == 0
    captured = capsys.readouterr()
    (announced,) = [line for line in captured.err.splitlines() if line.startswith("hf-fer predict:")]
    assert "the shipped default model" in announced and "detected" in announced
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(0, 200, 20))
    assert all(len(r["faces"]) == 3 for r in records), [len(r["faces"]) for r in records]
    # The same three people keep the same ids, ordered left to right, in every frame.
    orders = {tuple(f["id"] for f in sorted(r["faces"], key=lambda f: f["box"]["xmin"])) for r in records}
    assert len(orders) == 1 and sorted(next(iter(orders))) == [0, 1, 2], orders
    assert all(len(f["labels"]) == 2 for r in records for f in r["faces"])
    # Table rows on stdout name the frame and the face id.
    assert f"{video}@180" in captured.out
    with av.open(str(annotated / "panned.mp4")) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 10 and frames[0].shape == (432, 640, 3)


def test_a_video_that_opens_but_has_no_frame_is_reported_and_coordinates_are_rounded(video, tmp_path, capsys):
    """A Matroska file cut right after its header opens with PyAV but decodes no frame: reported, never silent.
    Boxes and landmarks come out rounded to 2 decimals (never float32 noise such as 131.49000549316406)."""
    import av

    from hf_fer.cli import main

    whole = make_video(tmp_path / "whole.mkv", 5, size=(320, 240))
    data = whole.read_bytes()
    headless = tmp_path / "headless.mkv"
    headless.write_bytes(data[: data.index(bytes.fromhex("1F43B675")) + 8])  # cut inside the first Cluster
    with av.open(str(headless)) as container:  # what makes this case: it opens, and no frame decodes
        assert sum(1 for _ in container.decode(video=0)) == 0
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(headless), str(video), "--every-n-frames", "100", "--output", str(out), "--quiet"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[0] == {"file": str(headless), "error": f"{headless}: no video frame could be decoded"}
    assert "skipped 1 unreadable file(s) of 3" in capsys.readouterr().err
    values = [v for r in records[1:] for f in r["faces"] for v in [*f["box"].values(), *sum(f["landmarks"], [])]]
    assert values and all(v == round(v, 2) for v in values)


def test_a_video_url_is_streamed_and_a_server_that_cannot_seek_is_named(video, http_folder, ranged_http_folder, tmp_path,
                                                                        capsys):
    """An MP4 over HTTP is decoded as it streams (PyAV/FFmpeg; its index is at the end, so the server must answer
    range requests): the same faces as the file. A server without range support gets an error naming the URL."""
    import shutil

    from hf_fer.cli import main

    shutil.copy(video, tmp_path / "clip.mp4")
    (ranged_base, _), (plain_base, _) = ranged_http_folder, http_folder
    outputs = {}
    for name, source in (("file", str(video)), ("url", f"{ranged_base}/clip.mp4")):
        outputs[name] = tmp_path / f"{name}.jsonl"
        assert main(["predict", source, "--every-n-frames", "50", "--output", str(outputs[name]), "--quiet"]) == 0
    from_file, from_url = ([json.loads(line) for line in outputs[name].read_text().splitlines()] for name in ("file", "url"))
    assert [r["frame"] for r in from_url] == [0, 50, 100, 150] and all(len(r["faces"]) == 3 for r in from_url)
    assert [r["faces"] for r in from_url] == [r["faces"] for r in from_file]
    unseekable = tmp_path / "unseekable.jsonl"
    assert main(["predict", f"{plain_base}/clip.mp4", str(video), "--every-n-frames", "100", "--output", str(unseekable),
                 "--quiet"]) == 0
    failed = json.loads(unseekable.read_text().splitlines()[0])
    assert failed["file"] == f"{plain_base}/clip.mp4" and failed["error"].startswith(f"{plain_base}/clip.mp4: ")
    assert "range requests" in failed["error"], failed
    assert "skipped 1 unreadable file(s) of 3" in capsys.readouterr().err


def test_iou_tracker_by_hand():
    from hf_fer.faces.video import IoUTracker

    tracker = IoUTracker(iou_threshold=0.3, max_missed=1, smoothing=0.5)
    a, b = [0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]
    p1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ids, smoothed = tracker.update(torch.tensor([a, b]), p1)
    assert ids == [0, 1] and torch.equal(smoothed, p1)
    # Order swapped and moved a little: ids follow the boxes; scores are 0.5 * previous + 0.5 * current.
    ids, smoothed = tracker.update(torch.tensor([[51.0, 50.0, 61.0, 60.0], [1.0, 0.0, 11.0, 10.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    assert ids == [1, 0]
    assert smoothed.tolist() == [[0.5, 0.5], [1.0, 0.0]]
    # b missing for one frame is kept (max_missed=1) and comes back with its id; a new face gets a new id.
    assert tracker.update(torch.tensor([a]), torch.tensor([[1.0, 0.0]]))[0] == [0]
    assert tracker.update(torch.tensor([b, [100.0, 100.0, 120.0, 120.0]]), torch.tensor([[0.0, 1.0], [0.0, 1.0]]))[0] == [1, 2]
    # Gone for two frames: forgotten.
    tracker.update(torch.zeros(0, 4), torch.zeros(0, 2))
    tracker.update(torch.zeros(0, 4), torch.zeros(0, 2))
    assert tracker.update(torch.tensor([a]), torch.tensor([[1.0, 0.0]]))[0] == [3]


MEMORY_SCRIPT = """
import os, resource, sys
import hf_fer.cli, hf_fer.predict, hf_fer.faces.video  # imported once; each run is a fork, so both start equal
for video, output in zip(sys.argv[1::2], sys.argv[2::2]):
    pid = os.fork()
    if pid == 0:
        code = hf_fer.cli.main(["predict", video, "--every-n-frames", "30", "--quiet", "--output", output, "--device", "cpu"])
        print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, code, flush=True)
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert status == 0, status
"""


def test_peak_memory_of_a_10x_longer_video_stays_close(tmp_path):
    """Peak RSS (ru_maxrss, in forked children of one process that imported everything) for a video and one 10x
    longer: frames are streamed, so the long one must not hold more (loose bound: +10 %)."""
    import pyarrow.parquet as pq

    short = make_video(tmp_path / "short.mp4", 60, size=(320, 224))
    long = make_video(tmp_path / "long.mp4", 600, size=(320, 224))
    args = [str(short), str(tmp_path / "short.parquet"), str(long), str(tmp_path / "long.parquet")]
    run = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, *args], capture_output=True, text=True, timeout=300,
                         stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr[-2000:]
    short_kb, long_kb = [int(line.split()[1]) for line in run.stdout.splitlines() if line.startswith("MAXRSS_KB")]
    assert pq.read_table(tmp_path / "long.parquet").column("frame").to_pylist()[-1] == 570  # the whole video ran
    assert long_kb <= 1.10 * short_kb, (short_kb, long_kb)
