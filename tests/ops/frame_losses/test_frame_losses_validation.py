"""Bad inputs of the fused per-frame loss terms: every backend of the public function (and the raw Triton op, which
runs the same check) refuses them before any kernel runs, with a ValueError naming the op, the argument, what is
expected and what was received (``trgnet_fast/ops/frame_losses/validation.py``)."""
from __future__ import annotations

import re

import pytest
import torch

from validation_cases import assert_public_function_names_the_argument
from frame_losses_cases import case_inputs, fused, size
from op_checks import BACKEND_DEVICE, api_backends, assert_same_float32_result, floating_to
from trgnet_fast.ops.frame_losses import OP_NAME, TENSOR_NAMES
from trgnet_fast.ops.registry import OPS

SPEC = OPS[OP_NAME]
SIZE = size(2, 3, 2, 5, 9)


def _bad(name, make):
    return pytest.param(name, make, id=name)


BAD = [  # (argument named in the message, change of the inputs -> (inputs, expected message part))
    _bad("logits", lambda x: ({**x, "logits": x["logits"][0]},
                              "expected a 4-D tensor (S, N, K, T), got shape (2, 5, 9)")),
    _bad("logits", lambda x: ({**x, "logits": x["logits"].long()}, "expected a floating dtype, got torch.int64")),
    _bad("boundary_logits", lambda x: ({**x, "boundary_logits": x["boundary_logits"][:, :, :-1]},
                                       "expected shape (R, N, T) = (R, 2, 9), got (3, 2, 8)")),
    _bad("boundary_logits", lambda x: ({**x, "boundary_logits": x["boundary_logits"].float()},
                                       "expected dtype torch.float64 (same as logits), got torch.float32")),
    _bad("labels", lambda x: ({**x, "labels": x["labels"].int()},
                              "expected dtype torch.int64 (int64), got torch.int32")),
    _bad("next_frame", lambda x: ({**x, "next_frame": x["next_frame"][:, :-1]},
                                  "expected shape (N, T) = (2, 9), got (2, 8)")),
    _bad("previous_frame", lambda x: ({**x, "previous_frame": x["previous_frame"].float()},
                                      "expected dtype torch.int64 (int64), got torch.float32")),
    _bad("ce_weight", lambda x: ({**x, "ce_weight": x["ce_weight"].long()},
                                 "expected a floating dtype, got torch.int64")),
    _bad("boundary", lambda x: ({**x, "boundary": x["boundary"].bool()}, "expected a floating dtype, got torch.bool")),
    _bad("pos_weight", lambda x: ({**x, "pos_weight": x["pos_weight"].to(torch.float8_e5m2)},
                                  "expected dtype float32, float64, float16 or bfloat16, got torch.float8_e5m2")),
    _bad("pair_weight", lambda x: ({**x, "pair_weight": x["pair_weight"][None]},
                                   "expected shape (N, T) = (2, 9), got (1, 2, 9)")),
    _bad("boundary", lambda x: ({**x, "boundary": x["boundary"][:, None]},
                                "expected shape (N, T) = (2, 9), got (2, 1, 9)")),
    _bad("boundary_weight", lambda x: ({**x, "boundary_weight": x["boundary_weight"].T},
                                       "expected shape (N, T) = (2, 9), got (9, 2)")),
    _bad("pos_weight", lambda x: ({**x, "pos_weight": x["pos_weight"][0]}, "expected shape (1,) = (1,), got ()")),
    _bad("pos_weight", lambda x: ({**x, "pos_weight": 3.7}, "expected a torch.Tensor, got float")),
    _bad("threshold", lambda x: ({**x, "threshold": 0.0}, "expected a finite float > 0, got 0.0")),
    _bad("threshold", lambda x: ({**x, "threshold": float("inf")}, "expected a finite float > 0, got inf")),
    _bad("time_axis", lambda x: ({**x, "time_axis": 1}, "expected a bool, got 1")),
]


@pytest.mark.parametrize("backend", api_backends(SPEC))
@pytest.mark.parametrize("name, change", BAD)
def test_public_function_names_the_argument(backend, name, change):
    inputs, expected = change(case_inputs(SIZE, device=BACKEND_DEVICE.get(backend, "cpu")))
    assert_public_function_names_the_argument(fused(backend), OP_NAME, name, inputs, expected)


@pytest.mark.parametrize("backend", api_backends(SPEC))
def test_weights_are_converted_to_the_compute_dtype(backend):
    """The public function takes the weights, targets and pos_weight in any floating dtype and computes in the
    logits' compute dtype (float32 for 16-bit and float32 logits): the same terms as with weights given in it. The
    raw ops take them in the compute dtype only."""
    device = BACKEND_DEVICE.get(backend, "cpu")
    inputs = case_inputs(SIZE, dtype=torch.float32, device=device)
    half = floating_to(inputs, torch.float16)
    # the weights alone float32
    exact = floating_to(half, torch.float32) | {"logits": half["logits"], "boundary_logits": half["boundary_logits"]}
    assert_same_float32_result(fused(backend), half, exact)
    wide = inputs | {name: inputs[name].double() for name in ("ce_weight", "pos_weight")}
    assert_same_float32_result(fused(backend), wide, inputs)


def test_raw_ops_take_the_weights_in_the_compute_dtype():
    from trgnet_fast.ops.frame_losses.validation import validate_inputs
    inputs = case_inputs(SIZE, dtype=torch.float32)
    tensors = [inputs[n].double() if n == "ce_weight" else inputs[n] for n in TENSOR_NAMES]
    with pytest.raises(ValueError, match=re.escape("op: ce_weight: expected dtype torch.float32 (the compute dtype "
                                                   "of torch.float32 logits), got torch.float64")):
        validate_inputs("op", tensors, 4.0, True)


def test_raw_kernels_refuse_too_many_classes():
    """The fused kernels hold one frame's classes at once: K > 1024 is refused by the kernel check, not computed."""
    from trgnet_fast.ops.frame_losses.validation import validate_inputs
    inputs = case_inputs(size(1, 1, 1, 1025, 3))
    tensors = [inputs[n] for n in TENSOR_NAMES]
    validate_inputs("op", tensors, 4.0, True)
    with pytest.raises(ValueError, match=re.escape("op: logits: expected at most 1024 classes for the fused kernels, "
                                                   "got K = 1025")):
        validate_inputs("op", tensors, 4.0, True, kernel=True)
    tensors[0] = tensors[0][:, :, :1024].contiguous()  # K = 1024: the largest the kernels take
    validate_inputs("op", tensors, 4.0, True, kernel=True)


@pytest.mark.parametrize("time_axis", [True, False], ids=["time", "classes"])
def test_backward_checks_grad_terms_and_time_lse(time_axis):
    """The raw backward ops' extra arguments: grad_terms (3,) and time_lse (S, N, 2, K) (time axis) or (0,), both in
    the compute dtype."""
    from trgnet_fast.ops.frame_losses.validation import validate_backward_inputs
    inputs = case_inputs(size(2, 3, 2, 5, 9, time_axis=time_axis))
    tensors = [inputs[n] for n in TENSOR_NAMES]
    time_lse = torch.zeros((2, 2, 2, 5) if time_axis else (0,), dtype=torch.float64)
    grad_terms = torch.ones(3, dtype=torch.float64)
    validate_backward_inputs("op", grad_terms, tensors, time_lse, 4.0, time_axis)
    with pytest.raises(ValueError, match=re.escape("op: grad_terms: expected shape (3,) = (3,), got (2,)")):
        validate_backward_inputs("op", grad_terms[:2], tensors, time_lse, 4.0, time_axis)
    with pytest.raises(ValueError, match=re.escape("op: grad_terms: expected dtype torch.float64")):
        validate_backward_inputs("op", grad_terms.float(), tensors, time_lse, 4.0, time_axis)
    wrong = torch.zeros((2, 2, 2, 5) if not time_axis else (0,), dtype=torch.float64)
    with pytest.raises(ValueError, match=re.escape("op: time_lse: expected shape")):
        validate_backward_inputs("op", grad_terms, tensors, wrong, 4.0, time_axis)
