"""Bad inputs of the fused ARIS terms: every backend of the public function (and the raw Triton op, which runs the
same check) refuses them before any kernel runs, with a ValueError naming the op, the argument, what is expected and
what was received (``trgnet_fast/ops/aris_losses/validation.py``)."""
from __future__ import annotations

import re

import pytest
import torch

from aris_losses_cases import case_inputs, fused, size
from op_checks import BACKEND_DEVICE, api_backends
from validation_cases import assert_public_function_names_the_argument
from trgnet_fast.ops.aris_losses import OP_NAME, TENSOR_NAMES
from trgnet_fast.ops.aris_losses.validation import (BACKWARD_INPUT_NAMES, validate_backward_inputs,
                                                    validate_inputs)
from trgnet_fast.ops.registry import OPS

SPEC = OPS[OP_NAME]
SIZE = size(2, 3, 9, 4, run=3, spare=2)  # N = 2, D = 3, T = 9; M depends on the drawn runs
HEAD_SIZE = size(2, 3, 9, 4, run=3, spare=2, head=5)  # and a (D, C) = (3, 5) feature head on (2, 5, 9) features


def _bad(name, make):
    return pytest.param(name, make, id=name)


def _m(inputs) -> int:
    return inputs["segment_count"].shape[0]


BAD = [  # (argument named in the message, change of the inputs -> (inputs, expected message part))
    _bad("features", lambda x: ({**x, "features": x["features"][0]},
                                "expected a 3-D tensor (N, D, T), got shape (3, 9)")),
    _bad("features", lambda x: ({**x, "features": x["features"].long()}, "expected a floating dtype, got torch.int64")),
    _bad("frame_segment", lambda x: ({**x, "frame_segment": x["frame_segment"][:, :-1]},
                                     "expected shape (N, T) = (2, 9), got (2, 8)")),
    _bad("frame_segment", lambda x: ({**x, "frame_segment": x["frame_segment"].int()},
                                     "expected dtype torch.int64 (int64), got torch.int32")),
    _bad("segment_video", lambda x: ({**x, "segment_video": x["segment_video"][:-1]},
                                     f"expected shape (M,) = ({_m(x)},), got ({_m(x) - 1},)")),
    _bad("segment_start", lambda x: ({**x, "segment_start": x["segment_start"].float()},
                                     "expected dtype torch.int64 (int64), got torch.float32")),
    _bad("segment_count", lambda x: ({**x, "segment_count": x["segment_count"][None]},
                                     f"expected a 1-D tensor (M,), got shape (1, {_m(x)})")),
    _bad("segment_count", lambda x: ({**x, "segment_count": x["segment_count"].long()},
                                     "expected a floating dtype, got torch.int64")),
    _bad("segment_valid", lambda x: ({**x, "segment_valid": x["segment_valid"].long()},
                                     "expected dtype torch.bool (bool), got torch.int64")),
    _bad("segment_label", lambda x: ({**x, "segment_label": x["segment_label"][:3]},
                                     f"expected shape (M,) = ({_m(x)},), got (3,)")),
    _bad("unit_embeddings", lambda x: ({**x, "unit_embeddings": x["unit_embeddings"][:, :2]},
                                       "expected shape (K, D) = (K, 3) with K >= 1, got (4, 2)")),
    _bad("unit_embeddings", lambda x: ({**x, "unit_embeddings": x["unit_embeddings"].to(torch.float8_e5m2)},
                                       "expected dtype float32, float64, float16 or bfloat16, got torch.float8_e5m2")),
    _bad("logit_scale", lambda x: ({**x, "logit_scale": x["logit_scale"].repeat(2)},
                                   "expected shape (1,) = (1,), got (2,)")),
    _bad("logit_scale", lambda x: ({**x, "logit_scale": 2.5}, "expected a torch.Tensor, got float")),
    _bad("absolute_weight", lambda x: ({**x, "absolute_weight": x["absolute_weight"][:, :-1]},
                                       f"expected shape (M, M) = ({_m(x)}, {_m(x)}), got ({_m(x)}, {_m(x) - 1})")),
    _bad("relative_log_weight", lambda x: ({**x, "relative_log_weight": x["relative_log_weight"].bool()},
                                           "expected a floating dtype, got torch.bool")),
]


HEAD_BAD = [  # as BAD, on inputs with the feature head
    _bad("head_weight, head_bias", lambda x: ({**x, "head_bias": None},
                                              "expected both tensors (the feature head) or both None, got Tensor, "
                                              "None")),
    _bad("head_weight", lambda x: ({**x, "head_weight": x["head_weight"][:, :4]},
                                   "expected shape (D, C) = (D, 5) with D >= 1 (C: features' channels), got (3, 4)")),
    _bad("head_weight", lambda x: ({**x, "head_weight": x["head_weight"].long()},
                                   "expected a floating dtype, got torch.int64")),
    _bad("head_bias", lambda x: ({**x, "head_bias": x["head_bias"][:2]}, "expected shape (D,) = (3,), got (2,)")),
    _bad("unit_embeddings", lambda x: ({**x, "unit_embeddings": torch.zeros(4, 5)},
                                       "expected shape (K, D) = (K, 3) with K >= 1, got (4, 5)")),
    _bad("features", lambda x: ({**x, "features": x["features"][0]},
                                "expected a 3-D tensor (N, C, T), got shape (5, 9)")),
]


@pytest.mark.parametrize("backend", api_backends(SPEC))
@pytest.mark.parametrize("size, name, change", [pytest.param(SIZE, *case.values, id=case.id) for case in BAD]
                         + [pytest.param(HEAD_SIZE, *case.values, id=f"head-{case.id}") for case in HEAD_BAD])
def test_public_function_names_the_argument(backend, size, name, change):
    inputs, expected = change(case_inputs(size, device=BACKEND_DEVICE.get(backend, "cpu")))
    assert_public_function_names_the_argument(fused(backend), OP_NAME, name, inputs, expected)


@pytest.mark.parametrize("backend", api_backends(SPEC))
def test_state_inputs_are_converted_to_the_compute_dtype(backend):
    """The public function takes the counts, embeddings, logit_scale (also 0-d) and targets in any floating dtype and
    computes in the features' compute dtype: the same terms as with them given in it. The raw ops take them in the
    compute dtype only."""
    device = BACKEND_DEVICE.get(backend, "cpu")
    inputs = case_inputs(SIZE, dtype=torch.float32, device=device)
    half = {k: v.half() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in inputs.items()}
    exact = {k: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in half.items()}
    exact["features"] = half["features"]
    got = fused(backend)(**half)
    assert got.dtype == torch.float32 and torch.allclose(got, fused(backend)(**exact), rtol=1e-6, atol=0)
    wide = fused(backend)(**inputs | {"logit_scale": inputs["logit_scale"].double().reshape(())})
    assert wide.dtype == torch.float32 and torch.allclose(wide, fused(backend)(**inputs), rtol=1e-6, atol=0)


def test_raw_ops_take_the_state_in_the_compute_dtype():
    inputs = case_inputs(SIZE, dtype=torch.float32)
    tensors = [inputs[n] for n in TENSOR_NAMES] + [None, None]  # no feature head
    tensors[4] = tensors[4].double()  # segment_count
    with pytest.raises(ValueError, match=re.escape("op: segment_count: expected dtype torch.float32 (the compute "
                                                   "dtype of torch.float32 features), got torch.float64")):
        validate_inputs("op", tensors)
    tensors[4] = tensors[4].float()
    tensors[0] = tensors[0].transpose(1, 2).contiguous().transpose(1, 2)
    validate_inputs("op", tensors)
    with pytest.raises(ValueError, match=re.escape("op: features: expected a contiguous tensor")):
        validate_inputs("op", tensors, kernel=True)


def test_backward_checks_its_arguments():
    """The raw backward ops' arguments: grad_terms (2,), the saved segment_features (M, D), row_lse (3, M) and
    max_distance (2,) in the compute dtype of features_dtype, and features_dtype itself; with the feature head its
    (D, C) weight and the saved (M, C) segment_means, without it an empty segment_means."""
    inputs = case_inputs(SIZE)
    tensors = [inputs[n] for n in BACKWARD_INPUT_NAMES]
    m, d, c = inputs["segment_count"].shape[0], inputs["features"].shape[1], 5
    f, row_lse, max_distance = (torch.zeros(shape, dtype=torch.float64) for shape in ((m, d), (3, m), (2,)))
    no_means, means, weight = torch.zeros(0), torch.zeros(m, c, dtype=torch.float64), torch.zeros(d, c).double()
    grad_terms = torch.ones(2, dtype=torch.float64)
    validate_backward_inputs("op", grad_terms, tensors, f, row_lse, max_distance, None, no_means, torch.float64)
    validate_backward_inputs("op", grad_terms, tensors, f, row_lse, max_distance, weight, means, torch.float64)
    for args, expected in (
            ((grad_terms[:1], tensors, f, row_lse, max_distance, None, no_means, torch.float64),
             "op: grad_terms: expected shape (2,) = (2,), got (1,)"),
            ((grad_terms.float(), tensors, f, row_lse, max_distance, None, no_means, torch.float64),
             "op: grad_terms: expected dtype torch.float64"),
            ((grad_terms, tensors, f, row_lse[:2], max_distance, None, no_means, torch.float64),
             f"op: row_lse: expected shape (3, M) = (3, {m}), got (2, {m})"),
            ((grad_terms, tensors, f.float(), row_lse, max_distance, None, no_means, torch.float64),
             "op: segment_features: expected dtype torch.float64 (the compute dtype of torch.float64 features), got "
             "torch.float32"),
            ((grad_terms, tensors, f, row_lse, max_distance, None, no_means, torch.float32),
             "op: segment_features: expected dtype torch.float32"),
            ((grad_terms, tensors, f, row_lse, max_distance, None, no_means, torch.int64),
             "op: features_dtype: expected float32, float64, float16 or bfloat16, got torch.int64"),
            ((grad_terms, tensors, f[:, :2], row_lse, max_distance, None, no_means, torch.float64),
             "op: unit_embeddings: expected shape (K, D) = (K, 2)"),
            ((grad_terms, tensors, f, row_lse, max_distance, None, means, torch.float64),
             f"op: segment_means: expected shape (0,) (no feature head) = (0,), got ({m}, {c})"),
            ((grad_terms, tensors, f, row_lse, max_distance, weight[:2], means, torch.float64),
             f"op: head_weight: expected shape (D, C) = ({d}, C) with C >= 1 (D: segment_features' columns), got "
             f"(2, {c})"),
            ((grad_terms, tensors, f, row_lse, max_distance, weight, means[:, :2], torch.float64),
             f"op: segment_means: expected shape (M, C) = ({m}, {c}), got ({m}, 2)"),
            ((grad_terms, tensors, f, row_lse, max_distance, weight.float(), means, torch.float64),
             "op: head_weight: expected dtype torch.float64")):
        with pytest.raises(ValueError, match=re.escape(expected)):
            validate_backward_inputs("op", *args)
