"""Bad-input cases and the public-function checks shared by the validation tests of the fused ops with keyword inputs
(``tests/ops/<op>/test_<op>_validation.py``). A case of the layer ops (``att_module``, ``dilated_residual``,
``spatial_feature_injection``, ``batch_norm_relu``) is ``(id, inputs -> bad inputs, message fragment)``."""
from __future__ import annotations

import re

import pytest
import torch

from op_checks import BACKEND_DEVICE


def replaced(name: str, value):
    """``inputs -> inputs`` with the input ``name`` replaced by ``value(inputs[name])`` (``value`` callable) or by
    ``value``."""
    return lambda inputs: inputs | {name: value(inputs[name]) if callable(value) else value}


def tensor_cases(name: str, rank: str) -> list:
    """The tensor input ``name`` one dimension short (the message expects ``rank``, e.g. "a 3-D tensor (B, C, T)"),
    of an integer dtype, or a list."""
    return [(f"{name}-rank", replaced(name, lambda t: t[0]), f"{name}: expected {rank}"),
            (f"{name}-int", replaced(name, lambda t: t.int()), f"{name}: expected a floating dtype"),
            (f"{name}-list", replaced(name, lambda t: t.tolist()), f"{name}: expected a torch.Tensor")]


# the (B, 1, T) frame mask of the sequence ops
MASK_CASES = [("mask-shape", replaced("mask", lambda m: m[:, 0]), "mask: expected shape (B, 1, T)"),
              ("mask-bool", replaced("mask", lambda m: m.bool()), "mask: expected dtype")]

DROPOUT_SEED_CASES = [("seed-dtype", replaced("dropout_seed", lambda s: s.int()), "dropout_seed: expected dtype"),
                      ("seed-missing", replaced("dropout_seed", None), "dropout_seed: expected a (1,) int64 tensor")]

# cu_seqlens of inputs of 2 rows of T = 7 frames
SEQUENCE_OFFSET_CASES = [
    ("cu-dtype", replaced("cu_seqlens", lambda c: c.long()), "cu_seqlens: expected dtype"),
    ("cu-count", replaced("cu_seqlens", lambda c: c[:2]), "cu_seqlens: expected N + 1 offsets"),
    ("cu-rank", replaced("cu_seqlens", lambda c: c[None]), "cu_seqlens: expected a 1-D tensor"),
    ("cu-decreasing", replaced("cu_seqlens", lambda c: c.flip(0)),
     "cu_seqlens: expected non-decreasing offsets starting at 0"),
    ("cu-too-long", replaced("cu_seqlens", lambda c: torch.arange(3, dtype=torch.int32) * 8),
     "cu_seqlens: expected a row's sequence to fit T = 7 frames, got 8"),
]
# the cases of SEQUENCE_OFFSET_CASES that only reading the offsets' values shows
OFFSET_VALUE_CASES = ("cu-decreasing", "cu-too-long")


def assert_public_function_rejects(function, case, backend: str, valid_inputs) -> None:
    """``function(**inputs, backend=backend)`` on the case's change of ``valid_inputs(device)`` (on the backend's
    device) raises a ``ValueError`` with the case's message fragment."""
    name, change, message = case
    device = BACKEND_DEVICE.get(backend, "cpu")
    if name in OFFSET_VALUE_CASES and device != "cpu":
        pytest.skip("cu_seqlens values are checked on CPU tensors only (on a GPU reading them is a host sync)")
    inputs = change(valid_inputs(device))
    with pytest.raises(ValueError, match=rf"\b{re.escape(message)}"):
        function(**inputs, backend=backend)


def assert_public_function_names_the_argument(function, op: str, name: str, inputs: dict, expected: str) -> None:
    """``function(**inputs)`` raises a ``ValueError`` reading ``<op>: <name>: <expected>``."""
    with pytest.raises(ValueError, match=re.escape(f"{op}: {name}: {expected}")):
        function(**inputs)
