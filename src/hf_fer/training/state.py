"""Training state on disk that cannot lie: pickle-free checkpoints, atomic publishing, a folder lock, faults.

* **Checkpoints** (``O/checkpoints/step_K``) hold the model (safetensors), the optimizer, scheduler, AMP
  scaler and trainer counters (one JSON + one safetensors file) and every process's RNG states
  (``rng_<rank>.json`` + ``.safetensors``). Nothing is pickled, so resuming never runs code from the
  folder: files we did not write (a planted ``*.pkl``) are never opened. Each checkpoint is written into
  a temporary folder, fsynced and renamed.
* **Publishing** the best model (``O/``), the last model (``O/last/``) and ``O/training_results.json``
  happens as one unit: everything is staged in ``O/.publish.tmp``, fsynced, and the folder is renamed
  to ``O/.publish`` (the commit point); then each file is moved into place with ``os.replace`` (so a
  reader never sees a half-written file) and the staging folder is removed. A run killed after the
  commit point is completed by the next run (:func:`finish_pending_publish`); one killed before it
  leaves the previous state untouched.
* **Lock**: ``O/training.lock`` (PID, process start, host) makes a second run into the same folder fail fast.
* **Faults**: ``HF_FER_FAULT_POINT=name[:n[:action]]`` makes the n-th pass through a named point
  (:func:`fault_point`) SIGKILL the process (``kill``, the default), raise ``ENOSPC`` (``enospc``) or wait
  for the file named by ``HF_FER_FAULT_RELEASE`` (``pause``). Tests use it to interrupt a run at exact
  places instead of racing a timer.
"""
from __future__ import annotations

import collections
import errno
import json
import os
import random
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FORMAT = "hf_fer-training-state"
STATE_VERSION = 1
LOCK_NAME = "training.lock"
PUBLISH_PENDING = ".publish"
PUBLISH_STAGING = ".publish.tmp"

_fault_counts: collections.Counter = collections.Counter()


class TrainingStateError(RuntimeError):
    """A checkpoint or output folder cannot be used; the message says which and why."""


class OutputLockedError(TrainingStateError):
    """Another run holds (or held, and may still hold) the output folder's lock."""


class NoSpaceError(OSError):
    """The disk filled up while writing; nothing that was there before has been changed."""


# ---------------------------------------------------------------------------------------------- faults


def fault_point(name: str) -> None:
    """Deterministic fault injection for tests (see the module docstring); free when the variable is unset."""
    spec = os.environ.get("HF_FER_FAULT_POINT")
    if not spec:
        return
    parts = spec.split(":")
    if parts[0] != name:
        return
    _fault_counts[name] += 1
    if _fault_counts[name] != (int(parts[1]) if len(parts) > 1 and parts[1] else 1):
        return
    action = parts[2] if len(parts) > 2 else "kill"
    if action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC) + " (injected by HF_FER_FAULT_POINT)")
    if action == "pause":
        release = Path(os.environ["HF_FER_FAULT_RELEASE"])
        Path(f"{release}.waiting").write_text(str(os.getpid()))
        while not release.exists():
            time.sleep(0.05)
        return
    os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------------------------------------- disk helpers


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync_file(Path(folder) / name)
        _fsync_dir(Path(folder))


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else 0


def is_no_space(error: BaseException) -> bool:
    """ENOSPC, however the writing library reports it (OSError, torch's RuntimeError, safetensors' error)."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(error)
        if "No space left" in text or "os error 28" in text or "Disk quota" in text:
            return True
        error = error.__cause__ or error.__context__
    return False


def no_space_error(folder: Path, needed: int, keeps: str) -> NoSpaceError:
    free = shutil.disk_usage(folder if folder.exists() else folder.parent).free
    return NoSpaceError(
        errno.ENOSPC,
        f"no space left on device while writing {folder}: about {needed / 2**20:.1f} MiB needed, {free / 2**20:.1f} MiB free. "
        f"{keeps} Free some space and run again with --resume.",
    )


def write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, default=str))


# ---------------------------------------------------------------------------------------------- pickle-free encoding


def encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """A JSON-able copy of ``obj`` whose tensors/arrays go to ``tensors`` (saved with safetensors)."""
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = f"t{len(tensors)}"
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj).astype(np.int64 if obj.dtype.kind in "iu" else obj.dtype))
        return {"__ndarray__": key, "dtype": str(obj.dtype)}
    if isinstance(obj, (bool, str)) or obj is None:
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj)
    if isinstance(obj, tuple):
        return {"__tuple__": [encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [encode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: encode(v, tensors) for k, v in obj.items()}
        return {"__items__": [[encode(k, tensors), encode(v, tensors)] for k, v in obj.items()]}
    raise TypeError(f"cannot store a {type(obj).__name__} in a training checkpoint (only tensors, numbers, strings and containers)")


def decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return tensors[obj["__ndarray__"]].numpy().astype(np.dtype(obj["dtype"]))
    if "__tuple__" in obj:
        return tuple(decode(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {decode(k, tensors): decode(v, tensors) for k, v in obj["__items__"]}
    return {k: decode(v, tensors) for k, v in obj.items()}


def save_encoded(folder: Path, stem: str, payload: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    encoded = encode(payload, tensors)
    save_file(tensors, str(folder / f"{stem}.safetensors"))
    write_json(folder / f"{stem}.json", {"format": STATE_FORMAT, "version": STATE_VERSION, "payload": encoded})


def load_encoded(folder: Path, stem: str) -> dict[str, Any]:
    from safetensors.torch import load_file

    json_path, tensor_path = folder / f"{stem}.json", folder / f"{stem}.safetensors"
    if not json_path.is_file() or not tensor_path.is_file():
        raise TrainingStateError(f"{folder} is not an hf_fer checkpoint: {json_path.name} or {tensor_path.name} is missing")
    document = json.loads(json_path.read_text())
    if document.get("format") != STATE_FORMAT or document.get("version") != STATE_VERSION:
        raise TrainingStateError(f"{json_path}: unknown checkpoint format {document.get('format')!r} version {document.get('version')!r}")
    return decode(document["payload"], load_file(str(tensor_path)))


def rng_states() -> dict[str, Any]:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# ---------------------------------------------------------------------------------------------- lock


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_start(pid: int) -> str | None:
    """An identity of process ``pid`` that a later process reusing the PID does not share (boot id + start
    time in clock ticks, from /proc), or None where /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}:{stat.rsplit(')', 1)[1].split()[19]}"
    except (OSError, IndexError):
        return None


def _holder_alive(holder: dict[str, Any]) -> bool:
    """Whether the process that wrote the lock ``holder`` (on this host) still runs.

    A PID alone is not enough: after a container restart PIDs are handed out again from 1, so a dead run's PID
    routinely belongs to a live process — often the new run itself. The recorded start identity tells them apart.
    """
    pid = holder.get("pid")
    if not isinstance(pid, int) or not _pid_alive(pid):
        return False
    recorded = holder.get("process_start")
    if recorded is None:  # a lock written before start identities were recorded
        return pid != os.getpid()  # this process takes the lock once: its own PID in an old lock is a reused one
    current = process_start(pid)
    return current is None or current == recorded


def acquire_lock(output: Path, force: bool = False) -> Path:
    """Create ``output/training.lock`` (PID, process start identity, host); fail fast if another run holds it.

    ``force`` breaks a stale lock: one whose process (on this host) is gone, or whose PID now belongs to
    another process (a reused PID). A lock whose process is alive is never broken; one from another host is
    broken only with ``force`` (its PID cannot be checked).
    """
    output.mkdir(parents=True, exist_ok=True)
    lock = output / LOCK_NAME
    me = {"pid": os.getpid(), "process_start": process_start(os.getpid()), "host": socket.gethostname(),
          "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text() or "{}")
            except (OSError, ValueError):
                holder = {}
            if not isinstance(holder, dict):
                holder = {}
            pid, host = holder.get("pid"), holder.get("host")
            same_host = host == me["host"]
            alive = same_host and _holder_alive(holder)
            if alive or not same_host and host is not None and not force:
                raise OutputLockedError(
                    f"{output} is in use by another training run (PID {pid} on host {host}, started {holder.get('started')}; "
                    f"lock file {lock}). Wait for it to finish or choose another --output."
                    + ("" if alive else " If that run is gone, pass --force to break its lock.")
                )
            if not force:
                raise OutputLockedError(
                    f"{output} holds a stale lock ({lock}: PID {pid} on host {host} is not running, or is "
                    "now another process — a killed run?). "
                    "Pass --force to break it (add --resume to continue that run)."
                )
            print(f"breaking the stale lock {lock} of PID {pid} on host {host} (--force)", flush=True)
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump(me, handle)
            handle.flush()
            os.fsync(handle.fileno())
        return lock
    raise OutputLockedError(f"could not take the lock {lock}: another run took it meanwhile")


def release_lock(lock: Path) -> None:
    try:
        if json.loads(lock.read_text()).get("pid") == os.getpid():
            lock.unlink()
    except (OSError, ValueError):
        pass


# ---------------------------------------------------------------------------------------------- publishing O/, O/last, results


def finish_pending_publish(output: Path) -> bool:
    """Complete a committed publish (``O/.publish``) and drop an uncommitted one; True if one was completed."""
    shutil.rmtree(output / PUBLISH_STAGING, ignore_errors=True)
    pending = output / PUBLISH_PENDING
    if not pending.is_dir():
        return False
    for part, target in (("best", output), ("last", output / "last")):
        source = pending / part
        if not source.is_dir():
            continue
        target.mkdir(parents=True, exist_ok=True)
        # weights first: the point of maximal difference between old and new files, where faults are injected
        for path in sorted(source.iterdir(), key=lambda p: (p.name != "model.safetensors", p.name)):
            os.replace(path, target / path.name)
            if path.name == "model.safetensors":
                fault_point(f"{part}_model_apply" if part == "last" else "best_model_apply")
        _fsync_dir(target)
    results = pending / "training_results.json"
    if results.is_file():
        os.replace(results, output / "training_results.json")
    _fsync_dir(output)
    shutil.rmtree(pending)
    _fsync_dir(output)
    return True


def publish(output: Path, parts: dict[str, Any], results: dict[str, Any], needed_bytes: int) -> None:
    """Write ``parts`` (``{"best"|"last": callable(folder)}``) and ``training_results.json`` as one unit."""
    staging = output / PUBLISH_STAGING
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        for name, writer in parts.items():
            writer(staging / name)
            fault_point(f"{name}_model_write" if name == "best" else "last_write")
        write_json(staging / "training_results.json", results)
        fsync_tree(staging)
        os.rename(staging, output / PUBLISH_PENDING)  # the commit point
        _fsync_dir(output)
    except Exception as error:
        shutil.rmtree(staging, ignore_errors=True)
        if is_no_space(error):
            raise no_space_error(output, needed_bytes, f"The model and results already in {output} are unchanged.") from error
        raise
    finish_pending_publish(output)


# ---------------------------------------------------------------------------------------------- checkpoints

CHECKPOINTS = "checkpoints"


def checkpoint_steps(output: Path) -> list[Path]:
    root = Path(output) / CHECKPOINTS
    found = [p for p in root.glob("step_*") if p.is_dir() and p.name[5:].isdigit()] if root.is_dir() else []
    return sorted(found, key=lambda p: int(p.name[5:]))


def _tensor_bytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def check_checkpointing_supported(accelerator) -> None:
    kind = str(getattr(accelerator, "distributed_type", "")).rsplit(".", 1)[-1]
    if kind in ("FSDP", "DEEPSPEED", "MEGATRON_LM"):
        raise TrainingStateError(
            f"resumable checkpoints are written for single-process and DDP runs; this run uses {kind}, whose sharded states "
            "this writer does not gather: set training.checkpoint_every_steps: null (the best and last models are still saved)"
        )


def save_checkpoint(accelerator, output: Path, step: int, keep: int, *, model, optimizer, scheduler, trainer_state) -> Path:
    """Write ``output/checkpoints/step_<step>`` atomically, pickle-free; keep the newest ``keep``.

    With ``keep >= 2`` the oldest checkpoints are pruned *before* writing, so the disk never holds more
    than ``keep`` of them (a kill during the write still leaves ``keep - 1`` intact ones).
    """
    from safetensors.torch import save_model

    check_checkpointing_supported(accelerator)
    root = output / CHECKPOINTS
    final, temporary = root / f"step_{step}", root / f".tmp_step_{step}"
    unwrapped = accelerator.unwrap_model(model)
    optimizer_state = optimizer.state_dict()
    needed = _tensor_bytes(unwrapped.state_dict()) + _tensor_bytes(optimizer_state) + (1 << 20)
    failure: BaseException | None = None
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
        if keep >= 2:
            for old in [p for p in checkpoint_steps(output) if p != final][: -(keep - 1)]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    try:
        if accelerator.is_main_process:
            temporary.mkdir(parents=True, exist_ok=True)
            save_model(unwrapped, str(temporary / "model.safetensors"))
            fault_point("checkpoint_write")
            scaler = getattr(accelerator, "scaler", None)
            save_encoded(temporary, "training_state", {
                "optimizer": optimizer_state, "scheduler": scheduler.state_dict(), "trainer": trainer_state.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None, "num_processes": accelerator.num_processes,
            })
        accelerator.wait_for_everyone()
        save_encoded(temporary, f"rng_{accelerator.process_index}", rng_states())
    except Exception as error:  # keep every rank in step, then report
        failure = error
    accelerator.wait_for_everyone()
    if failure is None and accelerator.is_main_process:
        try:
            fsync_tree(temporary)
            shutil.rmtree(final, ignore_errors=True)
            os.rename(temporary, final)
            _fsync_dir(root)
            for old in checkpoint_steps(output)[:-keep] if keep > 0 else []:
                shutil.rmtree(old, ignore_errors=True)
        except Exception as error:
            failure = error
    if failure is not None:
        shutil.rmtree(temporary, ignore_errors=True)
        if is_no_space(failure):
            previous = [p.name for p in checkpoint_steps(output) if p != final]
            keeps = (f"The previous checkpoint(s) {previous} are intact." if previous else "No earlier checkpoint exists.") + \
                f" The model in {output} is unchanged."
            raise no_space_error(root, needed, keeps) from failure
        raise failure
    accelerator.wait_for_everyone()
    return final


def load_device(device: torch.device | str) -> str:
    """The device string safetensors accepts: gloo CPU ranks run on ``cpu:<rank>``, which it refuses; CPU is CPU."""
    device = torch.device(device)
    return "cpu" if device.type == "cpu" else str(device)


def load_checkpoint(accelerator, checkpoint: Path, *, model, optimizer, scheduler, trainer_state, check=None) -> None:
    """Restore what :func:`save_checkpoint` wrote. Only our safetensors/JSON files are read: nothing is unpickled.

    ``check`` (optional) runs once the trainer state is restored and before anything else is, so it can refuse
    the checkpoint (e.g. a changed recipe) before a mismatched optimizer state fails to load.
    """
    from safetensors.torch import load_model

    checkpoint = Path(checkpoint)
    if not (checkpoint / "training_state.json").is_file():
        pickles = sorted(p.name for p in checkpoint.glob("*") if p.suffix in (".pkl", ".bin", ".pt", ".pth"))
        raise TrainingStateError(
            f"{checkpoint} is not an hf_fer checkpoint (no training_state.json)"
            + (f"; it holds pickled files {pickles}, which are never loaded because unpickling can run code "
               "(checkpoints of older hf_fer versions were written by Accelerate this way: start the run again)" if pickles else "")
        )
    state = load_encoded(checkpoint, "training_state")
    if state["num_processes"] != accelerator.num_processes:
        raise TrainingStateError(
            f"{checkpoint} was written by {state['num_processes']} process(es); resume it with the same number (this run has {accelerator.num_processes})"
        )
    trainer_state.load_state_dict(state["trainer"])
    if check is not None:
        check()
    load_model(accelerator.unwrap_model(model), str(checkpoint / "model.safetensors"), device=load_device(accelerator.device))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler = getattr(accelerator, "scaler", None)
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    set_rng_states(load_encoded(checkpoint, f"rng_{accelerator.process_index}"))
