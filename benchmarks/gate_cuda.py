"""Static GPU gate, CUDA part (issue 11, item 1): what the compiled CUDA extension predicts, without a GPU.

Reads the built ``lslu_kernels._C_cuda`` with ``cuobjdump`` (the CUDA toolkit's when it has one,
else the one in the triton wheel: CI's nvcc 13.0 ships none):

- ``cuobjdump -res-usage``: registers, stack frame (where spills go), local memory and static
  shared memory of every kernel instance, for every SASS architecture in the fatbin;
- ``cuobjdump -sass`` of the packed instances (VEC or CV > 1): the widest global load (LDG) and
  store (STG), and any local-memory access (LDL/STL);

names each instance by op, direction, layout (``channel``: inner > 1, ``rows``: inner == 1),
dtype, stages (LSLU), pack and index type, computes its theoretical occupancy, and writes
``benchmarks/results/gate-cuda.csv`` with the columns of the Triton gate's table.

The bar (issue 11): for fp32/bf16/fp16, no spill and no local memory; 128-bit global accesses
where the shape and alignment allow them; theoretical occupancy of at least 25%. The packed
instances are the ones that run where they are allowed, so ``widest_access_bits`` of a packed
instance must be 128 to meet the bar; the scalar fallbacks (pack 1) run where they are not and
are judged on spills and occupancy alone.

    python benchmarks/gate_cuda.py [--out benchmarks/results/gate-cuda.csv]
"""

import argparse
import csv
import dataclasses
import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "gate-cuda.csv"
COLUMNS = ["kernel", "target", "dtype", "layout", "shape", "index", "num_warps", "registers", "spill_bytes",
           "shared_bytes", "widest_access_bits", "occupancy", "meets_bar"]

# The launch geometry of csrc/cuda (decomposition.h, pwlu.cu) that occupancy depends on.
THREADS = 256
PWLU_SUMS_BYTES = 48 * 1024
PWLU_SCALAR_SUMS = 4
ROWS_TILE = 64
# The table's PWLU backward rows: the shared memory of its sums depends on N.
PWLU_INTERVALS = (16, 64)

# Per SM, the same on sm_80 and sm_90: registers, warps, blocks; the register allocation unit of a warp.
REGISTERS_PER_SM = 65536
WARPS_PER_SM = 64
BLOCKS_PER_SM = 32
REGISTER_UNIT = 256
# Shared memory per SM (the largest carveout) and what the system reserves per block.
SHARED_PER_SM = {"sm_80": 164 * 1024, "sm_90": 228 * 1024}
SHARED_RESERVED_PER_BLOCK = 1024
OCCUPANCY_BAR = 0.25
BARRED_DTYPES = ("float32", "bfloat16", "float16")

DTYPES = {"f": ("float32", 4), "d": ("float64", 8), "NS_4HalfE": ("float16", 2), "NS_8BFloat16E": ("bfloat16", 2)}
INDEX_TYPES = {"i": "int32", "l": "int64"}
# The engine's kernels (csrc/cuda/engine.cuh): cuda_engine::<direction>_kernel<Op, Walk>, with Op
# <Op>Op<dtype[, stages]> (PWLU's PwluCudaOp) and Walk <Layout>Walk<pack, index>.
INSTANCE = re.compile(r"(?P<direction>forward|backward)_kernelIN\w*?\d+(?P<op>Lslu|Pvlu|Pwlu)(?:Cuda)?Op"
                      r"I(?P<dtype>f|d|NS_4HalfE|NS_8BFloat16E)(?:Li(?P<stages>\d+)E)?EE"
                      r"N\w*?\d+(?P<layout>Channel|Rows)WalkILi(?P<pack>\d+)E(?P<index>[il])E")


@dataclasses.dataclass(frozen=True)
class Instance:
    mangled: str
    op: str
    direction: str
    layout: str
    dtype: str
    element_bytes: int
    stages: int | None
    pack: int
    index: str

    @property
    def kernel(self) -> str:
        """e.g. ``lslu_backward_rows S=3 pack=4``: the instance's name in the table."""
        stages = f" S={self.stages}" if self.stages is not None else ""
        return f"{self.op}_{self.direction}_{self.layout}{stages} pack={self.pack}"

    @property
    def pack_bits(self) -> int:
        return 8 * self.pack * self.element_bytes


def parse_instance(mangled: str) -> Instance | None:
    """The template arguments of one of our kernels from its mangled name; None for another function."""
    m = INSTANCE.search(mangled)
    if m is None:
        return None
    dtype, element_bytes = DTYPES[m["dtype"]]
    stages = int(m["stages"]) if m["stages"] else None
    op = m["op"].lower()
    if (op == "lslu") != (stages is not None):
        raise ValueError(f"unexpected template arguments in {mangled}")
    return Instance(mangled, op, m["direction"], m["layout"].lower(), dtype, element_bytes, stages, int(m["pack"]),
                    INDEX_TYPES[m["index"]])


def find_cuobjdump() -> str:
    """The CUDA toolkit's cuobjdump, else the one the triton wheel ships."""
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    candidates = [pathlib.Path(cuda_home) / "bin" / "cuobjdump"] if cuda_home else []
    on_path = shutil.which("cuobjdump")
    if on_path:
        candidates.append(pathlib.Path(on_path))
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(pathlib.Path(nvcc).resolve().parent / "cuobjdump")
    triton_spec = importlib.util.find_spec("triton")
    if triton_spec and triton_spec.origin:
        candidates.append(pathlib.Path(triton_spec.origin).parent / "backends" / "nvidia" / "bin" / "cuobjdump")
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise FileNotFoundError("no cuobjdump: neither the CUDA toolkit nor the triton wheel has one")


def extension_path() -> pathlib.Path | None:
    """The built _C_cuda shared library, found without importing it; None when it was not built."""
    spec = importlib.util.find_spec("lslu_kernels._C_cuda")
    return pathlib.Path(spec.origin) if spec and spec.origin else None


def _run(cuobjdump: str, *args: str) -> str:
    return subprocess.run([cuobjdump, *args], check=True, capture_output=True, text=True).stdout


def resource_usage(cuobjdump: str, library: pathlib.Path) -> dict[tuple[str, str], dict[str, int]]:
    """{(arch, mangled name): {REG, STACK, SHARED, LOCAL}} of every function in the fatbin's SASS."""
    usage, arch, function = {}, None, None
    for line in _run(cuobjdump, "-res-usage", str(library)).splitlines():
        line = line.strip()
        if line.startswith("arch = "):
            arch = line.split("=", 1)[1].strip()
        elif line.startswith("Function "):
            function = line[len("Function "):].rstrip(":")
        elif function and line.startswith("REG:"):
            fields = dict(re.findall(r"(\w+(?:\[\d+\])?):(\d+)", line))
            usage[(arch, function)] = {k: int(fields.get(k, 0)) for k in ("REG", "STACK", "SHARED", "LOCAL")}
            function = None
    return usage


ACCESS = re.compile(r"\b(LDG|STG|LDL|STL)((?:\.[A-Z0-9_]+)*)")
WIDTHS = {"128": 128, "64": 64, "U16": 16, "S16": 16, "U8": 8, "S8": 8}


@dataclasses.dataclass
class Accesses:
    widest_load: int = 0
    widest_store: int = 0
    local: int = 0  # LDL/STL instructions


def sass_accesses(cuobjdump: str, library: pathlib.Path, arch: str, names: set[str]) -> dict[str, Accesses]:
    """{mangled name: Accesses} from the SASS of the named functions for one architecture.

    Streams cuobjdump's output (hundreds of MB for the whole extension) and keeps only the
    memory instructions of the named functions.
    """
    found: dict[str, Accesses] = {}
    current = None
    with subprocess.Popen([cuobjdump, "-sass", "-arch", arch, str(library)], stdout=subprocess.PIPE, text=True,
                          bufsize=1 << 20) as process:
        for line in process.stdout:
            if "Function :" in line:
                name = line.split("Function :", 1)[1].strip()
                current = found.setdefault(name, Accesses()) if name in names else None
                continue
            if current is None or ("LD" not in line and "ST" not in line):
                continue
            for op, modifiers in ACCESS.findall(line):
                if op in ("LDL", "STL"):
                    current.local += 1
                    continue
                width = 32
                for modifier in modifiers.split("."):
                    width = WIDTHS.get(modifier, width)
                if op == "LDG":
                    current.widest_load = max(current.widest_load, width)
                else:
                    current.widest_store = max(current.widest_store, width)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, "cuobjdump -sass")
    return found


def occupancy(registers: int, threads: int, shared_bytes: int, arch: str) -> float:
    """Theoretical occupancy: resident warps / WARPS_PER_SM, from registers, warps, blocks and shared memory."""
    warps = -(-threads // 32)
    per_warp = -(-max(registers, 1) * 32 // REGISTER_UNIT) * REGISTER_UNIT
    blocks = min(BLOCKS_PER_SM, WARPS_PER_SM // warps, (REGISTERS_PER_SM // per_warp) // warps)
    if shared_bytes:
        blocks = min(blocks, SHARED_PER_SM[arch] // (shared_bytes + SHARED_RESERVED_PER_BLOCK))
    return blocks * warps / WARPS_PER_SM


def pwlu_backward_launch(instance: Instance, intervals: int) -> tuple[int, int]:
    """Threads and dynamic shared bytes of a PWLU backward block for a large tensor (pwlu.cu's launchers)."""
    acc_bytes = 8 if instance.dtype == "float64" else 4
    sum_rows = intervals + 1 + PWLU_SCALAR_SUMS
    columns = PWLU_SUMS_BYTES // (sum_rows * acc_bytes)
    if instance.layout == "channel":
        threads = min(THREADS, columns // 32 * 32)
        return threads, sum_rows * threads * acc_bytes
    # Rows: a C >= 64 tile, 64 / CV threads across; columns = threads * CV.
    across = ROWS_TILE // instance.pack
    multiple = max(32, across)
    threads = min(THREADS, columns // instance.pack // multiple * multiple)
    threads = max(1, threads // across) * across
    return threads, sum_rows * threads * instance.pack * acc_bytes


@dataclasses.dataclass
class Row:
    instance: Instance
    target: str
    shape: str
    threads: int
    registers: int
    spill_bytes: int
    local_bytes: int
    shared_bytes: int
    accesses: Accesses | None
    occupancy: float

    @property
    def widest_access_bits(self) -> int | None:
        """The narrower of the widest load and the widest store: both reach it (packed instances)."""
        if self.accesses is None:
            return None
        return min(self.accesses.widest_load, self.accesses.widest_store)

    @property
    def uses_local_memory(self) -> bool:
        return self.spill_bytes > 0 or self.local_bytes > 0 or bool(self.accesses and self.accesses.local)

    @property
    def meets_bar(self) -> bool:
        if self.instance.dtype in BARRED_DTYPES and self.uses_local_memory:
            return False
        if self.instance.pack > 1 and (self.widest_access_bits or 0) < 128:
            return False
        return self.occupancy >= OCCUPANCY_BAR

    def as_csv(self) -> dict:
        i = self.instance
        return {"kernel": i.kernel, "target": self.target, "dtype": i.dtype, "layout": i.layout, "shape": self.shape,
                "index": i.index, "num_warps": self.threads // 32, "registers": self.registers,
                "spill_bytes": self.spill_bytes + self.local_bytes, "shared_bytes": self.shared_bytes,
                "widest_access_bits": "" if self.widest_access_bits is None else self.widest_access_bits,
                "occupancy": f"{self.occupancy:.3f}", "meets_bar": "yes" if self.meets_bar else "no"}


def analyze(library: pathlib.Path | None = None, cuobjdump: str | None = None,
            sass_archs: tuple[str, ...] | None = None) -> list[Row]:
    """Every kernel instance of the extension, per SASS architecture (PWLU backward once per N of PWLU_INTERVALS)."""
    library = library or extension_path()
    if library is None:
        raise FileNotFoundError("lslu_kernels._C_cuda was not built")
    cuobjdump = cuobjdump or find_cuobjdump()
    usage = resource_usage(cuobjdump, library)
    instances = {name: parse_instance(name) for _, name in usage}
    archs = sorted({arch for arch, _ in usage})
    packed = {name for name, instance in instances.items() if instance and instance.pack > 1}
    accesses = {arch: sass_accesses(cuobjdump, library, arch, packed) for arch in (sass_archs or archs)}
    rows = []
    for (arch, name), resources in sorted(usage.items()):
        instance = instances[name]
        if instance is None:
            continue
        launches = [("", THREADS, 0)]
        if instance.op == "pwlu" and instance.direction == "backward":
            launches = [(f"N={n}", *pwlu_backward_launch(instance, n)) for n in PWLU_INTERVALS]
        for shape, threads, dynamic_shared in launches:
            shared = resources["SHARED"] + dynamic_shared
            rows.append(Row(instance, arch, shape, threads, resources["REG"], resources["STACK"], resources["LOCAL"],
                            shared, accesses.get(arch, {}).get(name) if instance.pack > 1 else None,
                            occupancy(resources["REG"], threads, shared, arch)))
    return rows


def write_csv(rows: list[Row], path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(row.as_csv())


def summary(rows: list[Row]) -> str:
    """Per op, direction, layout and dtype: the register range, worst spill, lowest occupancy, bar misses."""
    groups: dict[tuple, list[Row]] = {}
    for row in rows:
        i = row.instance
        groups.setdefault((i.op, i.direction, i.layout, i.dtype), []).append(row)
    lines = [f"{'family':34} {'registers':>9} {'spill':>5} {'occupancy':>11} {'packed width':>12} {'misses':>6}"]
    for (op, direction, layout, dtype), members in sorted(groups.items()):
        registers = [r.registers for r in members]
        widths = [r.widest_access_bits for r in members if r.widest_access_bits is not None]
        occupancies = [r.occupancy for r in members]
        lines.append(f"{op + '_' + direction + '_' + layout + ' ' + dtype:34} {min(registers):>4}-{max(registers):<4} "
                     f"{max(r.spill_bytes + r.local_bytes for r in members):>5} "
                     f"{min(occupancies):>5.0%}-{max(occupancies):<5.0%} "
                     f"{(str(min(widths)) + '-' + str(max(widths))) if widths else '-':>12} "
                     f"{sum(not r.meets_bar for r in members):>6}")
    met = sum(r.meets_bar for r in rows)
    lines.append(f"{met} of {len(rows)} rows meet the bar")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    parser.add_argument("--extension", type=pathlib.Path, default=None, help="the _C_cuda library (default: the built one)")
    args = parser.parse_args(argv)
    rows = analyze(args.extension)
    write_csv(rows, args.out)
    print(summary(rows))
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
