"""GS-TMSE with the published time-axis log-softmax vs the class-axis form, on a trained model's logits.

Loads a checkpoint written by `trgnet train`, runs its model in training mode (dropout off, no SAEP) on
padded training batches and prints, per batch and logit stage, both forms of the term, their relative
difference and the ratio of their gradient norms w.r.t. the logits, plus the whole TRGNetLoss with
``published_quirks`` True and False. docs/model.md#gs-tmse explains the two forms.

    python benchmarks/gstmse_axes.py --checkpoint runs/synthetic/best.pt --batches 3
"""
from __future__ import annotations

import argparse

import torch
from torch.utils.data import DataLoader

from trgnet_fast.data import collate
from trgnet_fast.losses import TRGNetLoss, gs_tmse
from trgnet_fast.training.commands import load_model
from trgnet_fast.training.data import build_splits, data_dir
from trgnet_fast.training.text import resolve_text
from trgnet_fast.training.trainer import disable_dropout


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="last.pt / best.pt written by `trgnet train`")
    ap.add_argument("--batches", type=int, default=3, help="number of training batches (default 3)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the checkpoint's train.batch_size")
    args = ap.parse_args(argv)
    if args.batches < 1:
        ap.error(f"--batches: expected ≥ 1, got {args.batches}")

    model, state = load_model(args.checkpoint, "cpu")
    cfg = state["config"]
    disable_dropout(model)
    model.train()
    root = state.get("data_root") or data_dir(cfg)
    names = state["class_names"]
    train = build_splits(cfg, root, len(names))["train"]
    text = resolve_text(cfg["text"], cfg["dataset"], names, root, warn=False)
    losses = {q: TRGNetLoss(text.action_embeddings, text.action_graph, 10.0, published_quirks=q)
              for q in (True, False)}
    loader = DataLoader(train, batch_size=args.batch_size or cfg["train"]["batch_size"], shuffle=False,
                        collate_fn=collate)
    print(f"{args.checkpoint}: {len(names)} classes; rel. diff = |time - classes| / classes")
    print(f"{'batch':>5} {'stage':>5} {'GS-TMSE time':>13} {'classes':>10} {'rel. diff':>9} "
          f"{'|grad| time/classes':>20} {'total (published)':>18} {'total (corrected)':>18}")
    for b, batch in enumerate(loader):
        if b == args.batches:
            break
        outputs = model(batch["x"], batch["mask"], state["joint_graph"])
        with torch.no_grad():
            totals = {q: float(fn(outputs, batch["x"], batch["labels"], batch["boundary"], batch["mask"])["total"])
                      for q, fn in losses.items()}
        for s, z in enumerate(outputs[0]):
            z = z.detach().double().requires_grad_(True)
            value, grad = {}, {}
            for axis in ("time", "classes"):
                term = gs_tmse(z, batch["x"].double(), batch["labels"], log_softmax_over=axis)
                (g,) = torch.autograd.grad(term, z)
                value[axis], grad[axis] = float(term.detach()), float(g.norm())
            rel = abs(value["time"] - value["classes"]) / value["classes"]
            print(f"{b:>5} {s:>5} {value['time']:>13.5f} {value['classes']:>10.5f} {rel:>9.1%} "
                  f"{grad['time'] / grad['classes']:>20.2f} {totals[True]:>18.4f} {totals[False]:>18.4f}")


if __name__ == "__main__":
    main()
