"""Deployment (SPEC.md section 2): models using the ops through ``torch.export`` (export, save, load, run)
and through ``torch.onnx.export(..., dynamo=True)`` into standard ONNX operators, run by ONNX Runtime.

Every export has a dynamic batch dimension, and every exported model runs at two batch sizes other
than the one it was traced with. The ONNX tests need the ``onnx`` extra (onnx, onnxscript,
onnxruntime) and skip without it; the ``torch.export`` ones always run.
"""

import functools

import pytest
import torch
from conftest import KERNEL_BACKENDS, backend_device
from ops import OPS
from parity import assert_elementwise
from torch import nn

import lslu_kernels as lk
from lslu_kernels import registry

# (id, shape, channel_dim): images and (batch, tokens, channels) activations.
LAYOUTS = [("nchw", (2, 5, 4, 3), 1), ("blc", (2, 7, 5), -1)]
RUN_BATCHES = (1, 3)


class Op(nn.Module):
    """One op with its parameters, as a model."""

    def __init__(self, fn, params, channel_dim, backend=None):
        super().__init__()
        self.fn, self.channel_dim, self.backend = fn, channel_dim, backend
        self.params = nn.ParameterList([nn.Parameter(p) for p in params])

    def forward(self, x):
        return self.fn(x, *self.params, channel_dim=self.channel_dim, backend=self.backend)


def _dynamic_batch():
    return ({0: torch.export.Dim("batch")},)


def _onnx_session(model, x):
    """``model`` exported with ``torch.onnx.export(dynamo=True)`` and loaded into ONNX Runtime."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    with torch.no_grad():
        program = torch.onnx.export(model, (x,), dynamo=True, dynamic_shapes=_dynamic_batch(), verbose=False)
    proto = program.model_proto
    domains = {node.domain for node in proto.graph.node}
    assert domains <= {""} and not proto.functions, (
        f"the ONNX graph uses other than standard operators: domains {domains}, functions "
        f"{[f.name for f in proto.functions]}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def check_onnx_matches_eager(model, make_x, label):
    """ONNX Runtime's outputs equal eager ones (SPEC.md section 3: float32, 1e-5 relative), at two batch sizes."""
    device = next(model.parameters()).device
    session = _onnx_session(model, make_x(2).to(device))
    (name,) = [i.name for i in session.get_inputs()]
    for batch in RUN_BATCHES:
        x = make_x(batch)
        (y,) = session.run(None, {name: x.numpy()})
        with torch.no_grad():
            expected = model(x.to(device)).cpu()
        assert_elementwise(torch.from_numpy(y), expected.double(), x.dtype, f"{label}, batch {batch}")


def check_torch_export_round_trip(model, make_x, tmp_path):
    """``torch.export`` with a dynamic batch, saved, loaded and run: the eager outputs, bitwise."""
    device = next(model.parameters()).device
    with torch.no_grad():
        program = torch.export.export(model, (make_x(2).to(device),), dynamic_shapes=_dynamic_batch())
    path = tmp_path / "model.pt2"
    torch.export.save(program, path)
    loaded = torch.export.load(path).module()
    for batch in RUN_BATCHES:
        x = make_x(batch).to(device)
        with torch.no_grad():
            y, expected = loaded(x), model(x)
        assert torch.equal(y.isnan(), expected.isnan()), f"batch {batch}: NaN at different places"
        assert torch.equal(y.nan_to_num(), expected.nan_to_num()), f"batch {batch}: outputs differ"


def _op_model(case, variant, layout, shared, backend=None, device="cpu"):
    _, shape, channel_dim = layout
    params = case.make_params(shape[channel_dim], variant, shared=shared, dtype=torch.float32)
    model = Op(case.fn, params, channel_dim, backend).to(device).eval()

    def make_x(batch):
        """float32, with NaN and both infinities in it."""
        x = case.make_x((batch, *shape[1:]), params, channel_dim).to(torch.float32)
        x.view(-1)[:3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
        return x

    return model, make_x


# (op, parameter variant, layout, shared): every variant per channel on images and shared on tokens,
# the two other combinations with each op's first variant.
OP_CASES = [(case, v, layout, shared) for case in OPS for v in case.variants
            for layout, shared in ((LAYOUTS[0], False), (LAYOUTS[1], True))]
OP_CASES += [(case, case.variants[0], layout, shared) for case in OPS
             for layout, shared in ((LAYOUTS[0], True), (LAYOUTS[1], False))]
OP_IDS = [f"{c}-{v}-{layout[0]}-{'shared' if s else 'per_channel'}" for c, v, layout, s in OP_CASES]


@pytest.mark.parametrize(("case", "variant", "layout", "shared"), OP_CASES, ids=OP_IDS)
def test_onnx_runtime_matches_eager(case, variant, layout, shared):
    model, make_x = _op_model(case, variant, layout, shared)
    check_onnx_matches_eager(model, make_x, f"{case} {variant}")


@pytest.mark.parametrize("backend", [*KERNEL_BACKENDS, "reference"])
@pytest.mark.parametrize("case", OPS, ids=str)
def test_onnx_runtime_matches_eager_from_each_backend(case, backend):
    """Whichever backend a model runs on when exported (the reference one traces into ATen ops)."""
    device = "cpu" if backend == "reference" else backend_device(backend)
    model, make_x = _op_model(case, case.variants[0], LAYOUTS[0], False, backend, device)
    check_onnx_matches_eager(model, make_x, f"{case} on {backend}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=str)
@pytest.mark.parametrize("case", OPS, ids=str)
def test_onnx_runtime_matches_eager_in_other_dtypes(case, dtype):
    """float64 inputs compute in float64, float16 ones in float32 and round once (SPEC.md section 3 bounds;
    bfloat16 has no NumPy type to feed ONNX Runtime's Python API with)."""
    model, make_x = _op_model(case, case.variants[0], LAYOUTS[0], False)
    check_onnx_matches_eager(model, lambda batch: make_x(batch).to(dtype), f"{case} in {dtype}")


def test_onnx_runtime_pwlu_at_knots_and_bounds():
    """Inputs on every knot, on both bounds and one float32 step inside them: the interval index's clamp
    (float32 rounds ``(x - B_L) / width`` up to ``N`` just below ``B_R`` for some bounds; unclamped, the
    last channel's row would read past the table)."""
    torch.manual_seed(0)
    channels, intervals = 16, 16
    params = OPS[2].make_params(channels, f"N{intervals}", dtype=torch.float32)
    left, right = params[1][:, None], params[2][:, None]
    width = (right - left) / intervals
    knots = left + torch.arange(intervals + 1) * width
    inside_right, inside_left = torch.nextafter(right, left), torch.nextafter(left, right)
    positions = torch.cat([knots, inside_left, inside_right, left, right], dim=1)  # (C, positions)
    assert bool(((inside_right - left) / width >= intervals).any()), "no input takes the clamp: test cannot fail"
    model = Op(lk.pwlu, params, channel_dim=1).eval()
    check_onnx_matches_eager(model, lambda batch: positions.expand(batch, -1, -1).contiguous(), "pwlu at knots")


def test_every_activation_has_a_translation():
    pytest.importorskip("onnxscript")
    names = {op.name() for op in lk.onnx.translation_table()}
    ops = {f"lslu_kernels::{a.name}" for a in registry.activations()} | {"lslu_kernels::lslu_dwconv"}  # + the full layer
    # The Triton backend's triton ops, where this process defined them (on a GPU; tests/test_compile.py too).
    ops |= {f"lslu_kernels::{a.name}_triton" for a in registry.activations()
            if hasattr(torch.ops.lslu_kernels, f"{a.name}_triton")}
    assert names == ops, "ops and ONNX translations differ"


@pytest.mark.parametrize("case", OPS, ids=str)
def test_translation_table_for_explicit_use(case):
    """``lk.onnx.translation_table()`` in ``custom_translation_table`` gives the same standard graph."""
    pytest.importorskip("onnxruntime")
    model, make_x = _op_model(case, case.variants[0], LAYOUTS[0], False)
    program = torch.onnx.export(model, (make_x(2),), dynamo=True, verbose=False,
                                custom_translation_table=lk.onnx.translation_table())
    assert {node.domain for node in program.model_proto.graph.node} <= {""}


def _random_(module, scale=0.3):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module


def _realigned_pwlu(channels, **kwargs):
    """A PWLU in phase II with a random table (phase I, still ReLU, is in the models below too)."""
    pwlu = lk.PWLU(channels, intervals=8, **kwargs)
    pwlu.running_mean.normal_()
    pwlu.realign()
    return _random_(pwlu)


def _image_model():
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), _random_(lk.LSLU(6)), nn.Conv2d(6, 5, 1), _random_(lk.PVLU()),
        _realigned_pwlu(5), nn.Conv2d(5, 4, 1), _random_(lk.LSLU(num_stages=2)), _realigned_pwlu(None),
        _random_(lk.PVLU(4)), lk.PWLU(4))


def _token_model():
    return nn.Sequential(
        nn.Linear(6, 8), _random_(lk.LSLU(8, channel_dim=-1)), _random_(lk.PVLU(8, channel_dim=-1)),
        _realigned_pwlu(8, channel_dim=-1), nn.Linear(8, 5), _random_(lk.LSLU(channel_dim=-1)),
        _realigned_pwlu(None, channel_dim=-1))


def _full_layer(deploy, shared):
    """conv -> full LSLU layer, trained-looking: a random series and BN statistics; optionally folded."""
    layer = _random_(lk.LearnableSerieslinearUnit(6, num_activations=2, shared=shared), scale=0.2)
    with torch.no_grad():
        layer.bn.running_mean.normal_()
        layer.bn.running_var.uniform_(0.5, 2.0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), layer).eval()
    if deploy:
        layer.switch_to_deploy()
    return model


# (id, model builder, input shape without the batch): eval form; the full layer also in deploy form.
MODELS = [
    ("image", _image_model, (3, 6, 5)),
    ("tokens", _token_model, (9, 6)),
    ("full_layer-shared", functools.partial(_full_layer, False, True), (3, 9, 7)),
    ("full_layer-deploy-shared", functools.partial(_full_layer, True, True), (3, 9, 7)),
    ("full_layer-deploy-per_channel", functools.partial(_full_layer, True, False), (3, 9, 7)),
]


@pytest.mark.parametrize(("build", "shape"), [m[1:] for m in MODELS], ids=[m[0] for m in MODELS])
def test_onnx_runtime_matches_eager_for_models(build, shape):
    torch.manual_seed(0)
    model = build().eval()
    check_onnx_matches_eager(model, lambda batch: torch.randn(batch, *shape), "model")


@pytest.mark.parametrize("case", OPS, ids=str)
def test_torch_export_round_trip(case, tmp_path):
    model, make_x = _op_model(case, case.variants[0], LAYOUTS[0], False)
    check_torch_export_round_trip(model, make_x, tmp_path)


@pytest.mark.parametrize(("build", "shape"), [m[1:] for m in MODELS], ids=[m[0] for m in MODELS])
def test_torch_export_round_trip_of_models(build, shape, tmp_path):
    torch.manual_seed(0)
    model = build().eval()
    check_torch_export_round_trip(model, lambda batch: torch.randn(batch, *shape), tmp_path)
