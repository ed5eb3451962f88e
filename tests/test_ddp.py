"""DistributedDataParallel over two CPU processes (gloo) computes the gradients of one process on the global batch.

Two spawned processes each train a small conv model holding one activation
module (per-channel parameters) on half of every global batch; DDP averages
their gradients, so with a mean loss each step's gradients must equal those of
one process on the whole batch. One spawn runs every case (starting processes
costs seconds); every parameter's gradient is checked at every step, labelled.
"""

import collections
import datetime
import os
import time

import pytest
import torch
from torch import nn

import lslu_kernels as lk

WORLD_SIZE = 2
STEPS = 3
GLOBAL_BATCH = 6  # 3 rows per process
TIMEOUT_S = 120  # the whole two-process run; a hung collective fails the test instead of blocking CI

# The C++ CPU kernels: DDP sees an op only through autograd of its parameters, which every backend
# shares (one torch.library op); the Triton interpreter would add seconds per process for nothing new.
BACKEND = "cpu"
OPS = ("lslu", "pvlu", "pwlu")


def make_model(op: str, backend: str, *, pwlu_phase_one: bool = False) -> nn.Module:
    """conv(5 channels) -> activation (per channel) -> linear, float64, same weights for a given seed.

    ``pwlu_phase_one``: PWLU starts in phase I and realigns by itself after 2 training steps."""
    torch.manual_seed(0)
    channels = 5
    if op == "lslu":
        act = lk.LSLU(channels, backend=backend, dtype=torch.float64)
    elif op == "pvlu":
        # alpha != 0, so beta gets a gradient from the first step.
        act = lk.PVLU(channels, alpha=0.3, beta=1.5, backend=backend, dtype=torch.float64)
    elif pwlu_phase_one:
        act = lk.PWLU(channels, intervals=7, statistics_steps=2, backend=backend, dtype=torch.float64)
    else:
        # Phase I statistics are tracked per process (test_pwlu_realigns_every_process_alike); realign now.
        act = lk.PWLU(channels, intervals=7, backend=backend, dtype=torch.float64)
        act.realign()
    model = nn.Sequential(collections.OrderedDict(
        conv=nn.Conv2d(3, channels, 3, dtype=torch.float64), act=act, flatten=nn.Flatten(),
        fc=nn.Linear(channels * 3 * 3, 4, dtype=torch.float64)))
    with torch.no_grad():  # move the activation parameters off their initial values (ReLU for LSLU)
        for p in act.parameters() if not pwlu_phase_one else ():
            p.add_(0.1 * torch.randn_like(p))
    return model


def global_batches():
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(GLOBAL_BATCH, 3, 5, 5, dtype=torch.float64, generator=generator),
             torch.randn(GLOBAL_BATCH, 4, dtype=torch.float64, generator=generator)) for _ in range(STEPS)]


def train(model, batches, rank=0, world_size=1):
    """SGD steps on this process's share of each batch; the gradients of every step, by parameter name."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    names = [name.removeprefix("module.") for name, _ in model.named_parameters()]
    grads = []
    for x, target in batches:
        share = slice(rank * len(x) // world_size, (rank + 1) * len(x) // world_size)
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x[share]), target[share])  # a mean, as DDP's average expects
        loss.backward()
        grads.append({n: p.grad.detach().clone() for n, (_, p) in zip(names, model.named_parameters())
                      if p.grad is not None})  # PWLU's in phase I have none
        optimizer.step()
    return grads


def pwlu_phase_one_run(rank):
    """PWLU through phase I under DDP, realigned by itself after 2 steps, then trained: statistics, parameters."""
    model = make_model("pwlu", BACKEND, pwlu_phase_one=True)
    act = model.act
    # In phase I PWLU's parameters get no gradient: DDP must be told to expect that.
    ddp = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    batches = global_batches()
    train(ddp, batches[:1], rank, WORLD_SIZE)
    own_statistics = act.running_mean.clone()
    train(ddp, batches[1:], rank, WORLD_SIZE)  # realigns at the second step
    assert act.realigned, "PWLU did not realign after statistics_steps training forwards"
    return {"own_running_mean": own_statistics, "params": {n: p.detach().clone() for n, p in act.named_parameters()}}


def _worker(rank, init_file, out_dir):
    torch.set_num_threads(1)  # two processes on a small machine
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                         world_size=WORLD_SIZE, timeout=datetime.timedelta(seconds=60))
    try:
        results = {}
        for op in OPS:
            model = nn.parallel.DistributedDataParallel(make_model(op, BACKEND))
            results[op] = train(model, global_batches(), rank, WORLD_SIZE)
        results["pwlu_phase_one"] = pwlu_phase_one_run(rank)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_grads(tmp_path_factory):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available in this build of torch")
    if BACKEND not in lk.available_backends():
        pytest.skip(f"the {BACKEND!r} backend was not built here")
    out_dir = tmp_path_factory.mktemp("ddp")
    context = torch.multiprocessing.spawn(_worker, args=(str(out_dir / "init"), str(out_dir)),
                                          nprocs=WORLD_SIZE, join=False)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not context.join(timeout=1):  # raises if a process failed
            if time.monotonic() > deadline:
                pytest.fail(f"DDP run did not finish within {TIMEOUT_S} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    return [torch.load(out_dir / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]


@pytest.mark.parametrize("op", OPS)
def test_ddp_gradients_equal_single_process(ddp_grads, op):
    single = train(make_model(op, BACKEND), global_batches())
    for rank, results in enumerate(ddp_grads):
        assert len(results[op]) == STEPS, f"{op}, rank {rank}: {len(results[op])} steps recorded, expected {STEPS}"
        for step, (got, expected) in enumerate(zip(results[op], single)):
            assert got.keys() == expected.keys()
            for name in expected:
                # float64: the only difference is the order of summation (two halves, then their average).
                torch.testing.assert_close(got[name], expected[name], rtol=1e-10, atol=1e-12, msg=lambda m: (
                    f"{op}, rank {rank}, step {step}: gradient of {name} differs from one process: {m}"))


def test_pwlu_realigns_every_process_alike(ddp_grads):
    """Each process tracks its own batches' statistics; the automatic realignment averages them over the
    processes, so all get the same table and train the same parameters."""
    runs = [results["pwlu_phase_one"] for results in ddp_grads]
    assert not torch.equal(runs[0]["own_running_mean"], runs[1]["own_running_mean"]), \
        "the processes' statistics agree before the sync, so this test cannot tell whether it syncs"
    for name, value in runs[0]["params"].items():
        assert torch.equal(runs[1]["params"][name], value), f"PWLU {name} differs between the processes"
