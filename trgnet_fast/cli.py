"""`trgnet` command line: info, parity, train, eval, predict, average-splits, make-synthetic, convert-pku,
text-graphs, viz-graphs.

The parser lives here; the sub-command implementations are in ``trgnet_fast.training.commands`` and
``trgnet_fast.text.commands``.
Multi-process training: ``torchrun --standalone --nproc_per_node N $(which trgnet) train ...``.

Errors. A user error prints one line, ``trgnet <verb>: error: <message>``, to stderr and exits with status 2
(as argparse does for bad usage); the message names the argument or file, what was expected and what was
received. User errors are the exceptions the package raises for bad input: ``ValueError`` and its subclasses
(``ConfigError``, ``CheckpointError`` for a checkpoint that is refused, unreadable or of the wrong kind,
``json.JSONDecodeError``, ``UnicodeDecodeError``) and the file errors ``FileNotFoundError``,
``FileExistsError``, ``NotADirectoryError``, ``IsADirectoryError``, ``PermissionError``. Any other exception
(``TypeError``, ``RuntimeError``, ``KeyError``, ``AssertionError``, ...) is an internal error and keeps its
traceback. ``--debug`` (before or after the verb) or ``TRGNET_DEBUG=1`` re-raises user errors too.
Under torchrun every rank that fails prints its line and exits with status 2; torchrun then stops the others."""
from __future__ import annotations

import argparse
import json
import os
import sys

from trgnet_fast.evaluation.metrics import F1_ENDS
from trgnet_fast.text import commands as text_commands

DTYPES = ("float32", "float64", "bfloat16", "float16")
DEBUG_HELP = "show the full traceback of user errors too (or set TRGNET_DEBUG=1)"


def _info(args) -> int:
    from trgnet_fast import env_info

    info = env_info.collect()
    print(json.dumps(info, indent=2) if args.json else env_info.format_info(info))
    return 0


def _parity(args) -> int:
    import torch

    from trgnet_fast import parity
    from trgnet_fast.ops.registry import OPS

    unknown = sorted(set(args.op or ()) - set(OPS))
    if unknown:
        raise ValueError(f"--op: unknown op {', '.join(map(repr, unknown))}; the ops are {', '.join(sorted(OPS))}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtypes = [getattr(torch, d) for d in args.dtype] if args.dtype else None
    rows = parity.run_parity(device, ops=args.op, backends=args.backend, dtypes=dtypes,
                             seed=args.seed, progress=lambda msg: print("..", msg, file=sys.stderr),
                             size_set="cpu" if args.small else None)
    if not rows:
        print(f"no backend of the requested ops is usable on {device}; see `trgnet info`")
        return 1
    print(parity.format_table(rows))
    failed = [r for r in rows if not r.ok]
    print(f"\n{len(rows) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def _int_at_least(low: int):
    """argparse type: an integer ≥ ``low`` (argparse names the flag in its error)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer ≥ {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer ≥ {low}, got {value}")
        return value
    return parse


def _add_checkpoint_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of the commands that run a trained checkpoint over a split (eval, predict)."""
    p.add_argument("--checkpoint", required=True, help="last.pt / best.pt written by `trgnet train`")
    p.add_argument("--split", choices=("test", "val", "train"), default="test", help="default: test")
    p.add_argument("--data", help="dataset root, if it moved since training")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="run the forwards as CUDA graphs, one per video length bucket (a GPU and a mask-correct model "
                        "with fused layers; default: the checkpoint's eval.cuda_graphs)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trgnet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="versions, GPU, native build and usable backends")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_info)

    p = sub.add_parser("parity", help="every available backend of every fused op vs the float64 "
                       "reference on fresh random inputs (forward and gradients)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when present, else cpu")
    p.add_argument("--op", action="append", help="only this op (repeatable)")
    p.add_argument("--backend", action="append", choices=("torch", "triton", "cuda"),
                   help="only this backend (repeatable)")
    p.add_argument("--dtype", action="append", choices=DTYPES,
                   help="only this dtype (repeatable); default cpu: float32, float64; "
                        "cuda: float32, bfloat16, float16")
    p.add_argument("--seed", type=int, help="default: a fresh seed every run")
    p.add_argument("--small", action="store_true",
                   help="the small odd shapes of the CPU check on any device (e.g. under compute-sanitizer)")
    p.set_defaults(func=_parity)
    _add_training_commands(sub)
    text_commands.add_text_graphs_parser(sub)
    _add_viz_graphs_parser(sub)
    for p in sub.choices.values():  # SUPPRESS: a verb without --debug keeps the top-level value
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def _lazy(name):
    def run(args):
        from trgnet_fast.training import commands
        return getattr(commands, name)(args)
    return run


def _add_training_commands(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "train", formatter_class=fmt, help="train TRG-Net (single process, or DDP under torchrun)",
        description="Train TRG-Net. Without --config/--data it trains on the built-in synthetic dataset, "
                    "generated once under <output_dir>/synthetic_data.",
        epilog="examples:\n"
               "  trgnet train                                   # synthetic data, small model, a few epochs\n"
               "  trgnet train --config PKU-subject --data ./datasets --out runs/pku\n"
               "  trgnet train --set train.epochs=20 --set model.n_layers=6 --set optim.lr=5e-4\n"
               "  trgnet train --out runs/pku --config PKU-subject --resume   # continue from last.pt\n"
               "  torchrun --standalone --nproc_per_node 2 $(which trgnet) train ...   # DDP\n"
               "outputs in the output dir: config.yaml, log.csv, log.jsonl, last.pt, best.pt "
               "(best by train.best_metric, default F1@50 on a validation split carved from the training list)")
    p.add_argument("--config", default="synthetic",
                   help="preset (synthetic, PKU-subject, PKU-view, LARA, MCFS-130, TCG-15) or a YAML file "
                        "(may say `base: <preset>`); default: synthetic")
    p.add_argument("--data", help="dataset root (sets data.dir); csv paths in the config are relative to it")
    p.add_argument("--out", help="output directory (sets output_dir; default runs/<name>)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key, dotted, value parsed as YAML (repeatable), "
                        "e.g. --set train.batch_size=4 --set model.SFI_layer=[1,2]")
    p.add_argument("--epochs", type=int, help="shortcut for --set train.epochs=N")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (sets train.device)")
    p.add_argument("--resume", action="store_true",
                   help="continue from <output_dir>/last.pt (model, optimizer, epoch, RNG states, best score)")
    p.add_argument("--test", action="store_true", help="after training evaluate best.pt on the test split")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    p.set_defaults(func=_lazy("train"))

    p = sub.add_parser("eval", help="evaluate a checkpoint: metrics table and per-video CSV",
                       description="Evaluate a training checkpoint (batch 1, refinement_with_boundary by default) "
                                   "and write <out>/metrics_<split>.csv (one row per video + an 'all' row).")
    _add_checkpoint_arguments(p)
    p.add_argument("--out", help="output dir (default: eval_<split> next to the checkpoint)")
    p.add_argument("--f1-end", choices=F1_ENDS,
                   help="segment F1: a video's final segment ends at T-1 (published, ASRF/DeST) or at T "
                        "(mstcn, MS-TCN's eval.py); default: the checkpoint's eval.f1_end")
    p.set_defaults(func=_lazy("evaluate"))

    p = sub.add_parser("predict", help="per-frame predictions (MS-TCN text) and barcode PNGs per video",
                       description="Run a checkpoint over a split and write <out>/predictions/<video>.txt (one "
                                   "class name per frame), <out>/plots/<video>.png (GT vs prediction barcode) "
                                   "and <out>/metrics_<split>.csv.")
    _add_checkpoint_arguments(p)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG barcodes")
    p.set_defaults(func=_lazy("predict"))

    p = sub.add_parser("average-splits", help="mean of the 'all' rows of several metrics CSVs (e.g. 5 folds)",
                       description="Average the summary ('all') rows of metrics CSVs written by `trgnet eval` "
                                   "(equal weight per split, as in the usual cross-split protocol).")
    p.add_argument("csv", nargs="+", help="metrics CSV files")
    p.add_argument("--out", help="also write a CSV with one row per split and a 'mean' row")
    p.set_defaults(func=_lazy("average_splits"))

    p = sub.add_parser("make-synthetic", help="write the built-in synthetic dataset (published csv layout)",
                       description="Write the synthetic skeleton dataset: features/, gt_arr/, gt_boundary_arr/, "
                                   "mapping.txt, descriptions.txt, train/val/test.csv. Train on it with "
                                   "`trgnet train --data DIR`.")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--n-train", type=_int_at_least(0), default=120)
    p.add_argument("--n-val", type=_int_at_least(0), default=20)
    p.add_argument("--n-test", type=_int_at_least(0), default=30)
    p.add_argument("--min-frames", type=_int_at_least(2), default=300, help="≥ 2 (the model's InstanceNorm)")
    p.add_argument("--max-frames", type=_int_at_least(2), default=600)
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.set_defaults(func=_lazy("make_synthetic"))

    p = sub.add_parser("convert-pku", help="convert the raw PKU-MMD release to the published csv layout",
                       description="Convert raw PKU-MMD phase 1 (skeleton and label .txt files) into "
                                   "<out>/PKU/{features,gt_arr,gt_boundary_arr,mapping.txt} and "
                                   "<out>/csv/PKU-view/{train1,val1,test1}.csv (+ PKU-subject with "
                                   "--cross-subject). Train with `trgnet train --config PKU-view --data OUT "
                                   "--set data.mapping=PKU/mapping.txt`.")
    p.add_argument("--skeletons", required=True, help="folder of <video>.txt skeleton files (T lines × 150)")
    p.add_argument("--labels", required=True, help="folder of <video>.txt label files (class,start,end,conf)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--cross-subject", help="official cross-subject split file (enables PKU-subject csvs)")
    p.add_argument("--class-names", help="file with the 51 action names (or an 'id name' mapping)")
    p.add_argument("--frame-base", type=int, default=1, help="number of the first frame in label files")
    p.set_defaults(func=_lazy("convert_pku"))


def _add_viz_graphs_parser(sub) -> None:
    p = sub.add_parser(
        "viz-graphs", help="plot a trained model's adaptive graphs (G_f per segment, G_c) for one video",
        description="Run a checkpoint on one video, extract the CTRGC frame-level graph G_f (T, V, V) and the "
                    "channel-averaged channel-level graph G_c (V, V) and plot them per action segment.")
    p.add_argument("--checkpoint", required=True, help="trainer checkpoint, {'model', 'config'} dict or state_dict")
    p.add_argument("--video", required=True,
                   help="a video name of the checkpoint's dataset split (see --split/--data), or a feature .npy "
                        "(raw dataset format or built (C_in, V, T))")
    p.add_argument("--labels", help="per-frame label .npy for a --video file (default: the model's prediction)")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--data", help="dataset root (overrides the checkpoint config's data.dir)")
    p.add_argument("--dataset", help="dataset key for a bare state_dict (default: inferred from V)")
    p.add_argument("--n-classes", type=int, help="number of classes for a bare state_dict (default: inferred)")
    p.add_argument("--joint-graph", help="text | physical | identity | .npy (default: the checkpoint's, else text)")
    p.add_argument("--encoder", help="local text encoder for --joint-graph text")
    p.add_argument("--frames", help="comma-separated frame indices whose G_f is also saved/plotted, e.g. 0,10,20")
    p.add_argument("--residual", action="store_true", help="plot G_f - J (the input-dependent part) per segment")
    p.add_argument("--predicted", action="store_true", help="segment by the model's prediction, not ground truth")
    p.add_argument("--max-segments", type=int, default=12, help="plot at most this many segments (≥ 1; default 12)")
    p.add_argument("--out", default="graph_viz", help="output folder (default: ./graph_viz)")
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda | cuda:N (default: cpu)")
    p.set_defaults(func=_lazy("viz_graphs"))


# FloatingPointError: training stopped at a non-finite loss or weights (its message names epoch, step and what to
# change), an outcome of the configuration rather than an internal error
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
               PermissionError, FloatingPointError)


def _error_message(e: BaseException) -> str:
    """``e`` as one line (an OSError raised by the OS as "file: reason")."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        text = f"{e.filename}: {e.strerror}"
    else:
        text = str(e) or type(e).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("TRGNET_DEBUG", "") not in ("", "0")
    try:
        return args.func(args)
    except USER_ERRORS as e:
        if debug:
            raise
        print(f"trgnet {args.command}: error: {_error_message(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
