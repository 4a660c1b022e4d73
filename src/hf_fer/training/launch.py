"""Make ``accelerate launch --cpu --num_processes N`` start N processes.

accelerate 1.x routes ``--cpu`` jobs through its "simple" launcher, which starts ONE process whatever
``--num_processes`` says (several CPU processes need ``mpirun`` there). Users of the papers' multi-GPU
recipes expect ``--num_processes 2 --cpu`` to give two DDP ranks, and a silent single process would
change the effective batch size. So when the training command finds itself started that way, it
re-launches itself with accelerate's multi-process launcher (torchrun + gloo, ``ACCELERATE_USE_CPU=1``),
which is what ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N`` does by hand.
``HF_FER_NO_CPU_RELAUNCH=1`` switches this off.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


_TRUE = {"1", "true", "yes"}


def requested_cpu_processes(launcher_argv: list[str]) -> int | None:
    """``N`` if ``launcher_argv`` is an ``accelerate launch --cpu ... --num_processes N`` command line, else ``None``."""
    if not any(Path(arg).name in ("accelerate", "launch.py") or arg in ("launch", "accelerate.commands.launch") for arg in launcher_argv[:4]):
        return None
    if "--cpu" not in launcher_argv and "--use_cpu" not in launcher_argv:
        return None
    for index, arg in enumerate(launcher_argv):
        for flag in ("--num_processes", "--num-processes"):
            if arg == flag and index + 1 < len(launcher_argv):
                value = launcher_argv[index + 1]
            elif arg.startswith(flag + "="):
                value = arg.split("=", 1)[1]
            else:
                continue
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _parent_argv() -> list[str]:
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:  # not Linux, or no permission: nothing to fix
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def relaunch_cpu_processes_if_needed(script_argv: list[str]) -> int | None:
    """When started by ``accelerate launch --cpu --num_processes N`` (N > 1) as a single process, run ``N``
    gloo processes instead and return their exit code; otherwise return ``None`` (carry on in this process)."""
    if os.environ.get("HF_FER_NO_CPU_RELAUNCH", "").lower() in _TRUE:
        return None
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() not in _TRUE or "WORLD_SIZE" in os.environ:
        return None
    num_processes = requested_cpu_processes(_parent_argv())
    if not num_processes or num_processes < 2:
        return None
    # one line (not a warning and a print saying the same thing)
    print(f"hf_fer: launching {num_processes} CPU processes (gloo DDP): `accelerate launch --cpu` alone would start one "
          f"whatever --num_processes says; this is what `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes "
          f"{num_processes}` does", file=sys.stderr, flush=True)
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
        "--num_machines", "1", "--mixed_precision", os.environ.get("ACCELERATE_MIXED_PRECISION", "no"),
        "--dynamo_backend", "no", *script_argv,
    ]
    env = dict(os.environ, ACCELERATE_USE_CPU="1", HF_FER_NO_CPU_RELAUNCH="1")
    return subprocess.call(command, env=env)
