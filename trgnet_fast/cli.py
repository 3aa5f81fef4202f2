"""`trgnet` command line: `trgnet info`, `trgnet parity`."""
from __future__ import annotations

import argparse
import json
import sys

DTYPES = ("float32", "float64", "bfloat16", "float16")


def _info(args) -> int:
    from trgnet_fast import env_info

    info = env_info.collect()
    print(json.dumps(info, indent=2) if args.json else env_info.format_info(info))
    return 0


def _parity(args) -> int:
    import torch

    from trgnet_fast import parity

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtypes = [getattr(torch, d) for d in args.dtype] if args.dtype else None
    rows = parity.run_parity(device, ops=args.op, backends=args.backend, dtypes=dtypes,
                             seed=args.seed, progress=lambda msg: print("..", msg, file=sys.stderr))
    if not rows:
        print(f"no backend of the requested ops is usable on {device}; see `trgnet info`")
        return 1
    print(parity.format_table(rows))
    failed = [r for r in rows if not r.ok]
    print(f"\n{len(rows) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trgnet", description=__doc__)
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
    p.set_defaults(func=_parity)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
