"""The op registry: one ``OpSpec`` per fused op (``trgnet_fast/ops/spec.py``), each from its folder's ``spec.py``.

Everything that iterates over the fused ops reads ``OPS``: ``trgnet parity`` and ``trgnet info``, the benchmarks
and the kernel report, the CUDA-emulation harness and the parametrised tests. Adding an op = its folder
``trgnet_fast/ops/<op>/``, its ``csrc/`` and ``kernels/`` files, and one line below
(docs/architecture.md#adding-an-op).
"""
from __future__ import annotations

from trgnet_fast.ops.adaptive_graph_conv.spec import SPEC as ADAPTIVE_GRAPH_CONV
from trgnet_fast.ops.aris_losses.spec import SPEC as ARIS_LOSSES
from trgnet_fast.ops.att_module.spec import SPEC as ATT_MODULE
from trgnet_fast.ops.batch_norm_relu.spec import SPEC as BATCH_NORM_RELU
from trgnet_fast.ops.dilated_residual.spec import SPEC as DILATED_RESIDUAL
from trgnet_fast.ops.frame_losses.spec import SPEC as FRAME_LOSSES
from trgnet_fast.ops.linear_attention.spec import SPEC as LINEAR_ATTENTION
from trgnet_fast.ops.multiscale_graph_conv.spec import SPEC as MULTISCALE_GRAPH_CONV
from trgnet_fast.ops.spatial_feature_injection.spec import SPEC as SPATIAL_FEATURE_INJECTION
from trgnet_fast.ops.spec import BenchVariant, OpSpec

OPS: dict[str, OpSpec] = {spec.name: spec for spec in (
    LINEAR_ATTENTION,
    MULTISCALE_GRAPH_CONV,
    ADAPTIVE_GRAPH_CONV,
    BATCH_NORM_RELU,
    ATT_MODULE,
    DILATED_RESIDUAL,
    SPATIAL_FEATURE_INJECTION,
    FRAME_LOSSES,
    ARIS_LOSSES,
)}

BENCH_VARIANTS: dict[str, tuple[OpSpec, BenchVariant]] = {
    variant.name: (spec, variant) for spec in OPS.values() for variant in spec.bench}
