"""The parts of the benchmark suite behind ``benchmarks/run.py`` and ``benchmarks/kernel_report.py``.

run.py: ``plan`` (the cells: what x mode x provider x size, and why a cell is skipped), ``timing`` (the timed
loop, L2 flush, GPU busy time, copy rate, statistics), ``providers`` (compiled and fused callables, dynamo
counters), ``ops`` and ``model`` (one op cell, one model cell), ``environment`` (the run's machine
description) and ``report`` (results.md and results.json).

kernel_report.py: ``kernel_build`` (compiling the Triton and CUDA kernels for a GPU without one) and
``cubin`` (registers, spills, shared memory and the instruction mix of a compiled kernel).

The scripts put ``benchmarks/`` on ``sys.path``, so this package is imported as ``bench`` (and the workload
as ``workload``).
"""
