"""Static GPU gate, CUDA part: what the built CUDA extension's machine code predicts (benchmarks/gate_cuda.py).

Runs without a GPU, on the ``_C_cuda`` that the install built (cuobjdump from the CUDA toolkit or
the triton wheel). Fails, naming each instance, on:

- a spill or any local memory (stack frame, local bytes, LDL/STL) in an fp32/bf16/fp16 instance;
- a packed instance (16-byte packs, both index types) whose widest global load or store is not
  128 bits, or a narrower-packed one whose accesses are narrower than its pack.

The SASS is read for sm_90 only, to keep the test fast (the widths come from the PTX, which is
the same for sm_80); ``python benchmarks/gate_cuda.py`` reads both and writes the table.
"""

import importlib.util
import pathlib

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"


def _load_gate():
    spec = importlib.util.spec_from_file_location("gate_cuda", BENCHMARKS / "gate_cuda.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gate = _load_gate()

# No family has local memory: the 8-24-byte spills that LSLU and PWLU instances had went with
# __launch_bounds__(kThreads, kMinBlocksPerSM = 1) (csrc/cuda/common.cuh); PVLU's 28-byte local
# array (the table of CUDA's sinf/cosf large-argument reduction) with csrc/trig.h's sin and cos.
FAMILIES = sorted((op, direction, layout, dtype) for op in ("lslu", "pvlu", "pwlu")
                  for direction in ("forward", "backward") for layout in ("channel", "rows")
                  for dtype in gate.BARRED_DTYPES)


@pytest.fixture(scope="module")
def rows():
    library = gate.extension_path()
    if library is None:
        pytest.skip("the CUDA extension (lslu_kernels._C_cuda) was not built: no nvcc, or LSLU_KERNELS_BUILD_CUDA=0")
    return gate.analyze(library, sass_archs=("sm_90",))


def _family(rows, family):
    members = [r for r in rows if (r.instance.op, r.instance.direction, r.instance.layout, r.instance.dtype) == family]
    assert members, f"no instance of {family} in the extension"
    return members


def _label(row):
    return f"{row.instance.kernel} {row.instance.dtype} {row.instance.index} {row.target}"


def test_every_instance_is_named(rows):
    """Every kernel family, dtype and both index types are in the fatbin for sm_80 and sm_90."""
    seen = {(r.instance.op, r.instance.direction, r.instance.layout, r.instance.dtype, r.instance.index, r.target)
            for r in rows}
    wanted = {(*f[:3], dtype, index, target) for f in FAMILIES for dtype in (*gate.BARRED_DTYPES, "float64")
              for index in ("int32", "int64") for target in ("sm_80", "sm_90")}
    assert wanted <= seen, f"missing: {sorted(wanted - seen)[:10]}"


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: "-".join(f))
def test_no_spill_or_local_memory(rows, family):
    offenders = [f"{_label(r)}: {r.spill_bytes} B stack, {r.local_bytes} B local, "
                 f"{r.accesses.local if r.accesses else 0} LDL/STL" for r in _family(rows, family) if r.uses_local_memory]
    assert not offenders, f"{len(offenders)} instances use local memory:\n" + "\n".join(offenders)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: "-".join(f))
def test_packed_instances_access_whole_packs(rows, family):
    """16-byte packs take 128-bit LDG and STG (both index types); narrower packs, their own width."""
    offenders = []
    for r in _family(rows, family):
        if r.instance.pack == 1 or r.target != "sm_90":
            continue
        wanted = min(128, r.instance.pack_bits)
        if r.widest_access_bits != wanted:
            offenders.append(f"{_label(r)}: widest LDG {r.accesses.widest_load}, STG {r.accesses.widest_store} bits, "
                             f"want {wanted}")
    assert not offenders, "\n".join(offenders)


def test_int64_rows_kernels_store_whole_packs(rows):
    """The int64 rows kernels used to store their 16-byte packs as 4-8 scalar stores."""
    int64_rows = [r for r in rows if r.instance.layout == "rows" and r.instance.index == "int64"
                  and r.instance.pack_bits == 128 and r.target == "sm_90"]
    assert int64_rows, "no packed int64 rows instance"
    narrow = [_label(r) for r in int64_rows if r.accesses.widest_store != 128]
    assert not narrow, "stores narrower than 128 bits:\n" + "\n".join(narrow)


def test_occupancy_arithmetic():
    """The occupancy formula on cases worked by hand (65536 registers, 64 warps, 32 blocks per SM)."""
    assert gate.occupancy(32, 256, 0, "sm_90") == 1.0  # 8 blocks of 8 warps
    assert gate.occupancy(128, 256, 0, "sm_90") == 0.25  # 4096 registers per warp: 16 warps
    assert gate.occupancy(157, 256, 0, "sm_90") == 0.125  # 160 * 32 = 5120 per warp: 12 warps, 1 block
    assert gate.occupancy(255, 256, 0, "sm_90") == 0.125
    assert gate.occupancy(32, 32, 0, "sm_90") == 0.5  # 32 blocks of 1 warp
    assert gate.occupancy(32, 256, 100 * 1024, "sm_80") == 0.125  # 164 KiB hold one block of 101 KiB
    assert gate.occupancy(32, 256, 100 * 1024, "sm_90") == 0.25  # 228 KiB hold two


def test_instance_names_parse():
    name = ("_ZN12lslu_kernels11cuda_engine15backward_kernelINS_6LsluOpINS_8BFloat16ELi3EEENS_8RowsWalkILi4ElEEEE"
            "vT_PKNS7_6scalarESA_PS8_NS_9WalkSizesINT0_10index_typeEEE")
    i = gate.parse_instance(name)
    assert (i.op, i.direction, i.layout, i.dtype, i.stages, i.pack, i.index) == \
        ("lslu", "backward", "rows", "bfloat16", 3, 4, "int64")
    i = gate.parse_instance("_ZN12lslu_kernels11cuda_engine14forward_kernelINS_6PvluOpIfEENS_11ChannelWalkILi4EiEEEEvT_"
                            "PKNS6_6scalarEPS7_NS_9WalkSizesINT0_10index_typeEEE")
    assert (i.op, i.direction, i.layout, i.stages, i.pack, i.index, i.pack_bits) == \
        ("pvlu", "forward", "channel", None, 4, "int32", 128)
    i = gate.parse_instance("_ZN12lslu_kernels11cuda_engine14forward_kernelINS_39_GLOBAL__N__88c045b1_7_pwlu_cu_382b52a3"
                            "10PwluCudaOpINS_4HalfEEENS_8RowsWalkILi4ElEEEEvT_PKNS7_6scalarEPS8_NS_9WalkSizesINT0_"
                            "10index_typeEEE")
    assert (i.op, i.direction, i.layout, i.dtype, i.stages, i.pack, i.index) == \
        ("pwlu", "forward", "rows", "float16", None, 4, "int64")
    assert gate.parse_instance("_ZN3cub6detail11EmptyKernelIvEEvv") is None
