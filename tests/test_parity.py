import dataclasses
import math

import torch

from trgnet_fast import parity
from trgnet_fast.backend import backend_status
from trgnet_fast.ops.registry import OPS


def test_every_usable_backend_passes_on_cpu(required_backends):
    status = backend_status("cpu")
    # with a GPU, Triton runs there, not in its CPU interpreter (tests/conftest.py)
    on_cpu = required_backends - {"triton"} if torch.cuda.is_available() else required_backends
    missing = {b: status[b][1] for b in on_cpu if not status[b][0]}
    assert not missing, f"backends required by $TRGNET_REQUIRE_BACKENDS unusable on cpu: {missing}"
    rows = parity.run_parity("cpu")
    usable = {b for b, (ok, _) in status.items() if ok}
    for name, spec in OPS.items():
        expected = set(spec.implemented) & usable
        assert {r.backend for r in rows if r.op == name} == expected
    failed = [r for r in rows if not r.ok]
    assert not failed, parity.format_table(failed)
    # every op reports its output and each input gradient
    for name, spec in OPS.items():
        quantities = {r.quantity for r in rows if r.op == name}
        assert quantities == {"out", *(f"grad_{g}" for g in spec.grad_inputs)}


def test_a_wrong_implementation_fails(monkeypatch):
    spec = OPS["linear_attention"]

    def off_by_a_bit(**kw):
        kw.pop("backend")
        return spec.reference(**kw) * (1 + 1e-4)

    monkeypatch.setitem(OPS, spec.name, dataclasses.replace(spec, fused=off_by_a_bit))
    size = {"N": 2, "T": 9, "H": 2, "D": 4, "E": 3, "masked": True}
    # A fixed seed: random key lengths of 1 make dq, dk O(eps) (they cannot show an output scaled by 1 + 1e-4;
    # 5 of 300 seeds draw such lengths); seed 0 keeps several keys in both samples.
    rows = parity.run_parity("cpu", ops=[spec.name], backends=["torch"], dtypes=[torch.float32],
                            sizes=[size], seed=0)
    assert len(rows) == 4 and all(not r.ok for r in rows)


def test_nan_never_passes():
    row = parity.ParityRow("op", "torch", "cpu", "float32", "", "out", float("nan"), 1.0)
    assert not row.ok
    assert math.isinf(parity.relative_error(torch.ones(2), torch.ones(3)))


def test_size_set_picks_the_ops_small_shapes(monkeypatch):
    """size_set="cpu" (`trgnet parity --small`) runs the op's CPU shapes whatever the device."""
    spec = OPS["adaptive_graph_conv"]
    small, big = [{"N": 1, "C": 2, "T": 3, "V": 5}], [{"N": 1, "C": 2, "T": 4, "V": 6}]
    monkeypatch.setitem(OPS, spec.name, dataclasses.replace(spec, parity_sizes={"cpu": small, "cuda": big}))
    for size_set, expected in ((None, small), ("cpu", small), ("cuda", big)):
        rows = parity.run_parity("cpu", ops=[spec.name], backends=["torch"], dtypes=[torch.float64],
                                 size_set=size_set)
        assert {r.size for r in rows} == {parity._size_label(s) for s in expected} and all(r.ok for r in rows)


def test_a_per_input_gradient_floor_reaches_only_that_row(monkeypatch):
    """grad_error_floor may return {input: floor} (adaptive_graph_conv's beta): only that row is relaxed."""
    spec = OPS["adaptive_graph_conv"]

    def off_by_a_bit(**kw):
        kw.pop("backend")
        return spec.reference(**kw) * (1 + 1e-3)

    monkeypatch.setitem(OPS, spec.name, dataclasses.replace(
        spec, fused=off_by_a_bit, grad_error_floor=lambda inputs, grad_out: {"beta": 1e30}))
    rows = parity.run_parity("cpu", ops=[spec.name], backends=["torch"], dtypes=[torch.float64],
                            sizes=[{"N": 1, "C": 2, "T": 3, "V": 5}])
    assert {r.quantity for r in rows if r.ok} == {"grad_beta"}
    assert len(rows) == 1 + len(spec.grad_inputs)


def test_state_inputs_stay_in_the_compute_dtype():
    """An op's ``state_inputs`` (frame_losses' weights) reach a 16-bit parity run in float32 (the dtype the op takes
    them in), float64 in a float64 run; the other floating inputs in the run's dtype, integers unchanged."""
    from trgnet_fast.parity import _as_dtype
    inputs = {"x": torch.ones(2, dtype=torch.float64), "w": torch.ones(2, dtype=torch.float64),
              "i": torch.ones(2, dtype=torch.int64)}
    half = _as_dtype(inputs, torch.bfloat16, ("w",))
    assert (half["x"].dtype, half["w"].dtype, half["i"].dtype) == (torch.bfloat16, torch.float32, torch.int64)
    assert _as_dtype(inputs, torch.float64, ("w",))["w"].dtype == torch.float64
    assert OPS["frame_losses"].state_inputs and not OPS["linear_attention"].state_inputs
