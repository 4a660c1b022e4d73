"""DACL's center update under torch.distributed: every rank applies the full-batch update (upstream ran the loss
on the gathered DataParallel batch), even with uneven per-rank batch sizes. Two CPU processes, gloo backend."""
from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp

from hf_fer.models.dacl import DaclSparseCenterLoss

NUM_CLASSES, DIM = 4, 6


def _inputs():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(5, DIM, generator=generator)
    attention = torch.rand(5, DIM, generator=generator)
    labels = torch.tensor([1, 3, 1, 0, 1])
    centers = torch.randn(NUM_CLASSES, DIM, generator=generator)
    return features, attention, labels, centers


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        features, attention, labels, centers = _inputs()
        shard = slice(0, 3) if rank == 0 else slice(3, 5)  # uneven: 3 and 2 samples
        criterion = DaclSparseCenterLoss(NUM_CLASSES, DIM)
        criterion.centers.copy_(centers)
        criterion.update_centers(features[shard], attention[shard], labels[shard], lr=0.5)
        torch.save(criterion.centers.clone(), os.path.join(out_dir, f"centers_{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_center_update_gathers_all_ranks(tmp_path):
    # fork: the workers inherit the imported modules (a spawned worker would re-import torch and transformers).
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    features, attention, labels, centers = _inputs()
    single = DaclSparseCenterLoss(NUM_CLASSES, DIM)
    single.centers.copy_(centers)
    single.update_centers(features, attention, labels, lr=0.5)  # the whole batch in one process
    for rank in range(2):
        torch.testing.assert_close(torch.load(tmp_path / f"centers_{rank}.pt"), single.centers, atol=1e-6, rtol=1e-6)
    assert not torch.equal(single.centers, centers)
