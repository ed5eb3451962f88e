"""Train a small CNN on scikit-learn's 8x8 digits with ReLU, LSLU, PVLU and PWLU; report accuracy and time.

    python examples/digits.py --out examples/results/digits.md

The digits data set (1797 images, 10 classes) ships inside scikit-learn, so this
runs without a download. The split, the initial weights and the batch order are
fixed by the seeds; each activation starts from the same seeds. Every epoch's
test accuracy and training time is written as a markdown table (to stdout and
to ``--out``), with the conditions of the run. ``--records DIR`` also saves the
activation parameters of each learnable activation's first run per step
(lk.ParameterRecorder) as ``DIR/<activation>.jsonl``, for
``python -m lslu_kernels.plot_params``.
"""

import argparse
import collections
import datetime
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch
from torch import nn

import lslu_kernels as lk

ACTIVATIONS = ("relu", "lslu", "pvlu", "pwlu")
LEARNING_RATE, MOMENTUM = 0.05, 0.9
PWLU_STATISTICS_STEPS = 20  # about one epoch of phase I


def load_digits_split(seed: int = 0, test_fraction: float = 0.25):
    """(x_train, y_train, x_test, y_test): images as float32 (N, 1, 8, 8) in [0, 1], a stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0  # pixel values are 0..16
    labels = torch.tensor(digits.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(torch.arange(len(labels)).numpy(), test_size=test_fraction,
                                           random_state=seed, stratify=labels.numpy())
    return images[train_idx], labels[train_idx], images[test_idx], labels[test_idx]


def make_activation(name: str, channels: int, backend: str | None, pwlu_statistics_steps: int) -> nn.Module:
    """One activation module, per-channel parameters, at the project's default initial values."""
    if name == "relu":
        return nn.ReLU()
    if name == "lslu":
        return lk.LSLU(channels, backend=backend)
    if name == "pvlu":
        return lk.PVLU(channels, backend=backend)
    if name == "pwlu":
        return lk.PWLU(channels, statistics_steps=pwlu_statistics_steps, backend=backend)
    raise ValueError(f"unknown activation {name!r}; choose from {ACTIVATIONS}")


def make_model(activation: str, *, backend: str | None = None,
               pwlu_statistics_steps: int = PWLU_STATISTICS_STEPS) -> nn.Module:
    """conv(16)-BN-act, conv(32)-BN-act, 2x2 max pool, linear(10): about 20k weights for 8x8 images."""
    return nn.Sequential(collections.OrderedDict(
        conv1=nn.Conv2d(1, 16, 3, padding=1, bias=False), bn1=nn.BatchNorm2d(16),
        act1=make_activation(activation, 16, backend, pwlu_statistics_steps),
        conv2=nn.Conv2d(16, 32, 3, padding=1, bias=False), bn2=nn.BatchNorm2d(32),
        act2=make_activation(activation, 32, backend, pwlu_statistics_steps),
        pool=nn.MaxPool2d(2), flatten=nn.Flatten(), fc=nn.Linear(32 * 4 * 4, 10)))


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    # Plain SGD with momentum: every parameter, activation parameters included, at one learning rate.
    return torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)


def batches(count: int, batch_size: int, generator: torch.Generator):
    """Shuffled index batches of one epoch; the last, smaller batch is kept."""
    return torch.randperm(count, generator=generator).split(batch_size)


def train_step(model, optimizer, x, y) -> float:
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = (model(x).argmax(dim=1) == y).sum().item()
    model.train()
    return correct / len(y)


def train(activation: str, data, *, seed: int, epochs: int, batch_size: int = 64, max_batches: int | None = None,
          backend: str | None = None, recorder_path: str | None = None) -> list[dict]:
    """Train one model; one row per epoch: train loss, test accuracy, seconds of training."""
    x_train, y_train, x_test, y_test = data
    torch.manual_seed(seed)
    model = make_model(activation, backend=backend)
    optimizer = make_optimizer(model)
    order = torch.Generator().manual_seed(seed)
    recorder = lk.ParameterRecorder(model) if recorder_path else None
    rows, step = [], 0
    for epoch in range(1, epochs + 1):
        losses = []
        start = time.perf_counter()
        for idx in batches(len(y_train), batch_size, order)[:max_batches]:
            losses.append(train_step(model, optimizer, x_train[idx], y_train[idx]))
            step += 1
            if recorder:
                recorder.record(step)
        seconds = time.perf_counter() - start
        rows.append(dict(activation=activation, seed=seed, epoch=epoch, train_loss=sum(losses) / len(losses),
                         test_accuracy=accuracy(model, x_test, y_test), seconds=seconds))
    if recorder:
        recorder.save(recorder_path)
    return rows


def conditions(backend: str | None) -> str:
    try:
        git = dict(capture_output=True, text=True, cwd=Path(__file__).parent, check=True)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], **git).stdout.strip()
        if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], **git).stdout.strip():
            commit += " with uncommitted changes"
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    chosen = backend or "default (fastest available for CPU tensors)"
    return (f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}\n"
            f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"torch threads: {torch.get_num_threads()}, {platform.system()} {platform.release()}; "
            f"load average at the end of the run {os.getloadavg()[0]:.1f} (other jobs slow the timings)\n"
            f"- torch {torch.__version__}, lslu-kernels {lk.__version__} at commit {commit}, "
            f"backend: {chosen}, available: {lk.available_backends()}\n")


def report(rows: list[dict], header: str) -> str:
    """Markdown: per activation, the last epoch's accuracy (mean ± std over seeds) and the median epoch
    time; then every epoch of every run."""
    epochs = max(r["epoch"] for r in rows)
    lines = [header, "",
             "| activation | test accuracy, last epoch (mean ± std over seeds) | seconds per epoch (median) |",
             "| --- | --- | --- |"]
    for act in dict.fromkeys(r["activation"] for r in rows):
        final = [r["test_accuracy"] for r in rows if r["activation"] == act and r["epoch"] == epochs]
        seconds = [r["seconds"] for r in rows if r["activation"] == act]
        spread = statistics.stdev(final) if len(final) > 1 else 0.0
        lines.append(f"| {act} | {100 * statistics.mean(final):.2f}% ± {100 * spread:.2f} | "
                     f"{statistics.median(seconds):.3f} |")
    lines += ["", "| activation | seed | epoch | train loss | test accuracy | seconds |",
              "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['activation']} | {r['seed']} | {r['epoch']} | {r['train_loss']:.4f} | "
              f"{100 * r['test_accuracy']:.2f}% | {r['seconds']:.3f} |" for r in rows]
    return "\n".join(lines) + "\n"


def run(activations=ACTIVATIONS, seeds=(0, 1, 2), epochs: int = 10, batch_size: int = 64,
        max_batches: int | None = None, backend: str | None = None, records: str | None = None) -> str:
    """Train every activation from every seed; the markdown report.

    ``records``: a folder where each learnable activation's first run saves its parameters per step."""
    data = load_digits_split(seed=0)
    rows = []
    for act in activations:
        for seed in seeds:
            record = records and act != "relu" and seed == seeds[0]
            recorder_path = str(Path(records) / f"{act}.jsonl") if record else None
            rows += train(act, data, seed=seed, epochs=epochs, batch_size=batch_size, max_batches=max_batches,
                          backend=backend, recorder_path=recorder_path)
    header = (f"# Digits: ReLU vs LSLU vs PVLU vs PWLU\n\n"
              f"Small CNN (`examples/digits.py`), scikit-learn digits, {len(data[1])} training and "
              f"{len(data[3])} test images, {epochs} epochs of batch {batch_size}, SGD lr {LEARNING_RATE} "
              f"momentum {MOMENTUM}, seeds {list(seeds)}. PWLU realigns after {PWLU_STATISTICS_STEPS} steps. "
              f"Seconds: training only, per epoch. "
              f"± is the standard deviation over seeds: a difference within it is noise.\n\n"
              + conditions(backend))
    return report(rows, header)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--backend", default=None, help="lslu_kernels backend (default: fastest available)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", help="also write the markdown report here")
    parser.add_argument("--records", metavar="DIR",
                        help="save each learnable activation's parameters per step (first seed) to DIR/<act>.jsonl")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.records:
        Path(args.records).mkdir(parents=True, exist_ok=True)
    text = run(seeds=tuple(args.seeds), epochs=args.epochs, batch_size=args.batch_size, backend=args.backend,
               records=args.records)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
