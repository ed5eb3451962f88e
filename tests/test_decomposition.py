"""The CUDA engine's work decomposition, proven on the CPU (csrc/decomposition.h).

The CPU extension's test-only ``decomposition_visits`` walks every (block, thread) of a CUDA
launch through the very ``__host__ __device__`` code the kernels run (ChannelWalk, RowsWalk and
the block shapes of csrc/decomposition.h) and counts how often each element is visited and how
often each (part, channel) partial entry is written. Every element must be visited exactly once
and every partial entry written exactly once, for awkward shapes, both index types, every pack
width and block counts from one to more than there is work for.
"""

import pytest

ext = pytest.importorskip("lslu_kernels._C_cpu", reason="the CPU extension was not built")

PACKS = (1, 2, 4, 8)
# Blocks per column: one, a few (primes), more blocks than packs for the small shapes.
PER_COLUMN = (1, 2, 3, 7, 40)
# (outer, channels, inner) of the channel layout (inner > 1): primes, 1, non-powers of two,
# inners that are multiples of 8 (every pack) and ones that are not.
CHANNEL_SHAPES = [(1, 1, 2), (3, 5, 7), (2, 3, 16), (1, 2, 4104), (5, 1, 40), (7, 3, 24), (1, 7, 1000)]
# (outer, channels) of the rows layout (inner == 1): tiles narrower and wider than a warp,
# channels past the last full tile, multiples of 8 and not.
ROWS_SHAPES = [(1, 1), (3, 5), (2, 8), (17, 24), (5, 72), (9, 130), (31, 64), (4, 200), (300, 8)]
# Shared-memory limits on threads * channels per thread, with the widest pack they go with: none,
# and PWLU's backward at N = 64 in float32 and float64 (csrc/cuda/pwlu.cu: 48 KiB of (N + 5) sums
# per column; packs of 16 bytes, at most 4 channels in the rows layout).
MAX_COLUMNS = ((None, 8), (48 * 1024 // (69 * 4), 4), (48 * 1024 // (69 * 8), 2))


def _check(rows, pack, int64, outer, channels, inner, per_column, max_columns):
    kwargs = {} if max_columns is None else {"max_columns": max_columns}
    visits, writes, out_of_range, block, blocks = ext.decomposition_visits(
        rows, pack, int64, outer, channels, inner, per_column, **kwargs)
    label = (f"{'rows' if rows else 'channel'} pack={pack} {'int64' if int64 else 'int32'} "
             f"(outer, C, inner)={(outer, channels, inner)} blocks/column={per_column} block={block} blocks={blocks}")
    assert out_of_range == 0, f"{label}: {out_of_range} element offsets outside the tensor"
    assert len(visits) == outer * channels * inner
    wrong = [(i, v) for i, v in enumerate(visits) if v != 1]
    assert not wrong, f"{label}: {len(wrong)} elements not visited exactly once, first (offset, visits): {wrong[:5]}"
    assert len(writes) == per_column * channels
    wrong = [(divmod(i, channels), w) for i, w in enumerate(writes) if w != 1]
    assert not wrong, (f"{label}: {len(wrong)} partial entries not written exactly once, first ((part, channel), "
                       f"writes): {wrong[:5]}")
    # Threads a multiple of 32 (the block sums shuffle whole warps), at most 256.
    assert (block[0] * block[1]) % 32 == 0 and block[0] * block[1] <= 256, label


def _shapes_and_packs(shapes, packed_size):
    """(shape, pack) for each pack the engine takes at that shape: packs divide the packed size."""
    return [pytest.param(shape, pack, id=f"{shape}-pack{pack}")
            for shape in shapes for pack in PACKS if packed_size(shape) % pack == 0]


@pytest.mark.parametrize("int64", [False, True], ids=["int32", "int64"])
@pytest.mark.parametrize("shape, pack", _shapes_and_packs(CHANNEL_SHAPES, lambda shape: shape[2]))
def test_channel_layout_visits_every_element_once(shape, pack, int64):
    outer, channels, inner = shape
    for per_column in PER_COLUMN:
        for max_columns, widest in MAX_COLUMNS:
            if pack <= widest:
                _check(False, pack, int64, outer, channels, inner, per_column, max_columns)


@pytest.mark.parametrize("int64", [False, True], ids=["int32", "int64"])
@pytest.mark.parametrize("shape, pack", _shapes_and_packs(ROWS_SHAPES, lambda shape: shape[1]))
def test_rows_layout_visits_every_element_once(shape, pack, int64):
    outer, channels = shape
    for per_column in PER_COLUMN:
        for max_columns, widest in MAX_COLUMNS:
            if pack <= widest:
                _check(True, pack, int64, outer, channels, 1, per_column, max_columns)


def test_empty_backward_writes_every_partial_entry():
    """The engine runs an empty backward as a rows launch with no rows: its blocks still write every entry."""
    for channels in (1, 5, 64, 130):
        for per_column in (1, 3):
            _check(True, 1, False, 0, channels, 1, per_column, None)


def test_enumeration_notices_a_gap():
    """The check can fail: a grid of too few threads for the work is not one of the engine's, but a
    shape whose elements are not all in range shows up as out-of-range offsets or missed elements."""
    visits, writes, out_of_range, _, _ = ext.decomposition_visits(False, 4, False, 2, 3, 6, 1)
    # inner = 6 is not a multiple of the pack 4: the walk misses the last 2 elements of each row.
    assert visits.count(0) == 2 * 3 * 2 and out_of_range == 0
