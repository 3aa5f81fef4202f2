"""One model cell: a TRGNet training step (forward + loss + backward + Adam) or an inference forward of the
``benchmarks/workload.py`` model and batch, for one provider and size."""
from __future__ import annotations

import torch

import workload

from .plan import Cell
from .providers import COMPILED, compile_fn, mark_step
from .timing import measure


def run_model_cell(cell: Cell, args, device) -> dict:
    provider = cell.provider
    backend = provider if provider in ("triton", "cuda") else "torch"
    seed = cell.seed(args.seed)
    n, t = cell.size["N"], cell.size["T"]
    model = workload.build_model(device, backend, seed=args.seed)
    data = workload.make_model_inputs(n, t, device, seed, padded=cell.mode == "train")
    x, mask, jg = data["x"], data["mask"], data["joint_graph"]
    common = dict(warmup=args.model_warmup, repeat=args.model_repeat, max_s=args.max_cell_s,
                  sync_each=True, flush=None, cpu_memory=args.cpu_memory)
    if cell.mode == "train":
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def fwd_loss(x, mask, jg, labels, boundary):
            return workload.train_loss(model(x, mask, jg), labels, boundary, mask)

        fl = compile_fn(fwd_loss, provider) if provider in COMPILED else fwd_loss

        def step():
            mark_step(provider)
            opt.zero_grad(set_to_none=True)
            loss = fl(x, mask, jg, data["labels"], data["boundary"])
            loss.backward()
            opt.step()
        res = measure(step, device, **common)
    else:
        model.eval()
        fm = compile_fn(model, provider) if provider in COMPILED else model

        def step():
            mark_step(provider)
            with torch.no_grad():
                fm(x, mask, jg)
        res = measure(step, device, **common)
    res["params"] = sum(p.numel() for p in model.parameters())
    return res
