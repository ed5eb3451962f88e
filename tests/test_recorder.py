"""lk.ParameterRecorder logs every activation parameter at each recorded step; plot_params draws the records."""

import pytest
import torch
from parity import assert_elementwise
from torch import nn

import lslu_kernels as lk
from lslu_kernels import plot_params, recorder

STEPS = 4


def make_model():
    """Each op once, in a nested module: per-channel LSLU and PWLU, shared PVLU; the full LSLU layer."""
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(3, 3, 1), lk.PVLU(alpha=0.2))
    return nn.Sequential(nn.Conv2d(2, 3, 1), lk.LSLU(3, num_stages=2), block,
                         lk.PWLU(3, intervals=5, statistics_steps=2), lk.LearnableSerieslinearUnit(3, 2),
                         nn.Flatten(), nn.Linear(3 * 4 * 5, 2))


def train_and_record(model):
    """SGD steps, recording after each; also the values saved by hand: {(step, module): {param: tensor}}."""
    rec = lk.ParameterRecorder(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    by_hand = {}
    for step in range(STEPS):
        optimizer.zero_grad()
        model(torch.randn(7, 2, 4, 5)).square().mean().backward()
        optimizer.step()
        rec.record(step)
        for name, module in model.named_modules():
            if isinstance(module, (lk.LSLU, lk.PVLU, lk.PWLU)):
                by_hand[step, name] = {p: t.detach().clone() for p, t in module.named_parameters()}
            if isinstance(module, lk.LearnableSerieslinearUnit):  # its series; conv and BN are not recorded
                by_hand[step, name] = {p: getattr(module, p).detach().clone() for p in ("theta", "omega")}
    return rec, by_hand


def test_records_hold_the_parameters_of_each_step(tmp_path):
    model = make_model()
    rec, by_hand = train_and_record(model)
    rec.save(tmp_path / "params.jsonl")
    records = recorder.load_records(tmp_path / "params.jsonl")
    assert [(r["step"], r["module"], r["op"]) for r in records] == [
        (step, name, op) for step in range(STEPS)
        for name, op in (("1", "LSLU"), ("2.1", "PVLU"), ("3", "PWLU"), ("4", "LSLU"))]
    for r in records:
        expected = by_hand[r["step"], r["module"]]
        assert r["params"].keys() == expected.keys(), f"{r['module']}: recorded {list(r['params'])}"
        for name, value in expected.items():
            got = torch.tensor(r["params"][name], dtype=value.dtype)
            # JSON keeps every digit of a float, so the values come back bit for bit.
            assert torch.equal(got, value), f"step {r['step']}, {r['module']}.{name}: {got} != {value}"
    # PWLU realigns at its second training forward (statistics_steps=2), i.e. during step 1.
    assert [r["realigned"] for r in records if r["op"] == "PWLU"] == [False, True, True, True]
    # The parameters moved, so the records differ from step to step (the test above can tell steps apart).
    for module in ("1", "4"):
        first, last = by_hand[0, module]["omega"], by_hand[STEPS - 1, module]["omega"]
        assert not torch.equal(first, last), f"LSLU omega of module {module} did not change during training"


def test_recorder_needs_an_activation():
    with pytest.raises(ValueError, match="no LSLU, PVLU or PWLU"):
        lk.ParameterRecorder(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))


@pytest.mark.parametrize("op", ["LSLU", "PVLU", "PWLU"])
def test_curve_is_the_module_forward(op):
    """The plotted curve (reference functions on the recorded values) is what the module computes."""
    model = make_model()
    rec, _ = train_and_record(model)
    name, module = next((n, m) for n, m in model.named_modules() if type(m).__name__ == op)
    record = [r for r in rec.records if r["module"] == name][-1]
    grid = torch.linspace(-4, 4, 101, dtype=torch.float64)
    curve = plot_params.activation_curve(op, record["params"], grid, record.get("realigned", True))
    channels = curve.shape[1]
    with torch.no_grad():
        module.eval()
        expected = module(grid.float()[:, None].expand(-1, channels).contiguous())
    assert_elementwise(expected, curve, torch.float32, f"{op}: module forward against the plotted curve")


def test_plot_command_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib (in the 'plot' and 'test' extras) draws the figure")
    import matplotlib.image

    rec, _ = train_and_record(make_model())
    rec.save(tmp_path / "params.jsonl")
    out = tmp_path / "params.png"
    plot_params.main([str(tmp_path / "params.jsonl"), "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    height, width, _ = matplotlib.image.imread(out).shape
    assert (height, width) == (4 * 352, 1430), f"one row of panels per module expected, got {width}x{height} px"
