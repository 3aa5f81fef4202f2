"""Mutation testing of the code whose bugs would not crash (tests/README.md#mutation-testing).

Each mutant is one small AST change in one module of trgnet_fast (an operator, a constant, a return value, a slice
bound). It runs in a child forked from this process, which has already imported torch, pytest and the other
third-party modules the package needs, so a mutant costs one pytest run: the child puts the mutated module's code
in front of the import system, then runs the module's own tests (the mirror folder under tests/, its test files
named after the module first) with ``-x``. A test failing kills the mutant; all passing means it survived.

Mutants on lines that no test executes (line coverage of an unmutated run) survive without a run.

    python tests/mutation/mutate.py --package losses --package evaluation --out build/mutation/losses.json
"""
from __future__ import annotations

import argparse
import ast
import copy
import importlib
import importlib.abc
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "trgnet_fast"
# --package name -> its modules (model/ and each op's reference: the code whose bugs give wrong numbers)
PACKAGES = {
    "losses": "losses/**/*.py",
    "data": "data/**/*.py",
    "training": "training/**/*.py",
    "evaluation": "evaluation/**/*.py",
    "model": "model/**/*.py",
    "ops": "ops/*/reference.py",
}
PYTEST_ARGS = ["-x", "-q", "-p", "no:cacheprovider", "--no-header", "-o", "addopts="]
SURVIVED, KILLED, TIMEOUT, UNCOVERED = "survived", "killed", "timeout", "survived (no test runs the line)"

# ----------------------------------------------------------------------------------------------
# mutants

CMP = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
       ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in"}
# comparison -> relaxed/tightened, negated
CMP_SWAPS = {ast.Lt: (ast.LtE, ast.GtE), ast.LtE: (ast.Lt, ast.Gt), ast.Gt: (ast.GtE, ast.LtE),
             ast.GtE: (ast.Gt, ast.Lt), ast.Eq: (ast.NotEq,), ast.NotEq: (ast.Eq,), ast.Is: (ast.IsNot,),
             ast.IsNot: (ast.Is,), ast.In: (ast.NotIn,), ast.NotIn: (ast.In,)}
BIN = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**",
       ast.BitAnd: "&", ast.BitOr: "|", ast.LShift: "<<", ast.RShift: ">>"}
BIN_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Mult,
             ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd,
             ast.LShift: ast.RShift, ast.RShift: ast.LShift}
UNARY = {ast.USub: "-", ast.Not: "not ", ast.Invert: "~"}
# calls whose arguments are messages, not behaviour
MESSAGE_CALLS = {"print", "debug", "info", "warning", "warn", "error", "exception", "critical", "log"}


@dataclass
class Mutant:
    path: Path
    line: int
    col: int
    end_line: int
    mutation: str
    apply: Callable[[], None]  # changes the parsed tree in place (in the forked child: the parent's stays intact)

    def record(self) -> dict:
        src = self.path.read_text().splitlines()[self.line - 1].strip()
        return {"file": f"{self.path.relative_to(ROOT)}:{self.line}", "col": self.col, "mutation": self.mutation,
                "source": src}


def _set(parent, field: str, index: int | None, value) -> Callable[[], None]:
    def apply():
        if index is None:
            setattr(parent, field, value)
        else:
            getattr(parent, field)[index] = value
    return apply


def _set_attr(node, field: str, value) -> Callable[[], None]:
    return lambda: setattr(node, field, value)


def _shifted(bound: ast.expr, by: int) -> ast.expr:
    op = ast.Add() if by > 0 else ast.Sub()
    return ast.BinOp(left=copy.deepcopy(bound), op=op, right=ast.Constant(abs(by)))


def _constant_mutants(node: ast.Constant) -> list[tuple[str, Callable]]:
    value = node.value
    if isinstance(value, bool):
        return [(f"`{value}` -> `{not value}`", _set_attr(node, "value", not value))]
    if isinstance(value, (int, float)) and not isinstance(value, complex):
        new = {0: 1, 1: 0}.get(value, value + 1)
        new = type(value)(new)
        return [(f"`{value!r}` -> `{new!r}`", _set_attr(node, "value", new))]
    return []


def _node_mutants(node: ast.AST, slot) -> list[tuple[str, Callable]]:
    """(description, apply) of each mutant of ``node``; ``slot`` = (parent, field, index) holding it."""
    out = []
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            for new in CMP_SWAPS.get(type(op), ()):
                ops = [*node.ops[:i], new(), *node.ops[i + 1:]]
                out.append((f"`{CMP[type(op)]}` -> `{CMP[new]}`", _set_attr(node, "ops", ops)))
    elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in BIN_SWAPS:
        new = BIN_SWAPS[type(node.op)]
        out.append((f"`{BIN[type(node.op)]}` -> `{BIN[new]}`", _set_attr(node, "op", new())))
    elif isinstance(node, ast.BoolOp):
        new, name = (ast.Or, "or") if isinstance(node.op, ast.And) else (ast.And, "and")
        out.append((f"`{'and' if name == 'or' else 'or'}` -> `{name}`", _set_attr(node, "op", new())))
    elif isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        what = UNARY[type(node.op)]
        out.append((f"`{what}x` -> `x`", _set(*slot, node.operand)))
    elif isinstance(node, ast.Constant):
        out += _constant_mutants(node)
    elif isinstance(node, ast.Return) and node.value is not None and not (
            isinstance(node.value, ast.Constant) and node.value.value is None):
        out.append(("`return <value>` -> `return None`", _set_attr(node, "value", ast.Constant(None))))
    elif isinstance(node, ast.Slice):
        # constant bounds are already shifted by the constant mutants
        if node.lower is not None and not isinstance(node.lower, ast.Constant):
            out.append(("slice lower bound `i:` -> `i + 1:`", _set_attr(node, "lower", _shifted(node.lower, 1))))
        if node.upper is not None and not isinstance(node.upper, ast.Constant):
            out.append(("slice upper bound `:j` -> `:j - 1`", _set_attr(node, "upper", _shifted(node.upper, -1))))
    return out


def _is_message(node: ast.AST) -> bool:
    """Subtrees that are messages or annotations, not behaviour: raise, f-strings, log/print/warn calls,
    docstrings, an assert's message."""
    if isinstance(node, (ast.Raise, ast.JoinedStr)):
        return True
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
        return True
    if isinstance(node, ast.Call):
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        return name in MESSAGE_CALLS
    return False


SKIPPED_FIELDS = {"annotation", "returns", "msg", "type_comment", "decorator_list"}


def mutants_of(path: Path, tree: ast.Module) -> list[Mutant]:
    """Every mutant of the module ``tree`` (parsed from ``path``), in source order."""
    found = []

    def visit(node, slot):
        if _is_message(node):
            return
        for description, apply in _node_mutants(node, slot):
            found.append(Mutant(path, node.lineno, node.col_offset, node.end_lineno, description, apply))
        for field, value in ast.iter_fields(node):
            if field in SKIPPED_FIELDS:
                continue
            if isinstance(value, list):
                for i, child in enumerate(value):
                    if isinstance(child, ast.AST):
                        visit(child, (node, field, i))
            elif isinstance(value, ast.AST):
                visit(value, (node, field, None))

    visit(tree, (None, None, None))
    return sorted(found, key=lambda m: (m.line, m.col))


# ----------------------------------------------------------------------------------------------
# running tests in a forked child

def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


class _MutantFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves one module from a mutated code object."""

    def __init__(self, name: str, path: Path, code):
        self.name, self.path, self.code = name, path, code

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        package_dir = [str(self.path.parent)] if self.path.name == "__init__.py" else None
        return importlib.util.spec_from_file_location(fullname, self.path, loader=self,
                                                      submodule_search_locations=package_dir)

    def exec_module(self, module):
        exec(self.code, module.__dict__)


def _trace_lines(path: Path, lines: set[int]):
    """sys.settrace function recording the executed lines of ``path``."""
    target = str(path)

    def local(frame, event, arg):
        if event == "line":
            lines.add(frame.f_lineno)
        return local

    def tracer(frame, event, arg):
        return local if frame.f_code.co_filename == target else None
    return tracer


def run_child(tests: list[Path], log: Path, timeout: float, mutant: tuple[Mutant, ast.Module] | None = None,
              coverage_of: Path | None = None) -> tuple[str, float, set[int]]:
    """Run pytest on ``tests`` in a forked child, with ``mutant`` applied; (status, seconds, covered lines of
    ``coverage_of``)."""
    cover_file = Path(tempfile.mkstemp(suffix=".json")[1])
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 1
        try:
            os.setsid()
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            if mutant is not None:
                m, tree = mutant
                m.apply()
                code_obj = compile(ast.fix_missing_locations(tree), str(m.path), "exec")
                sys.meta_path.insert(0, _MutantFinder(module_name(m.path), m.path, code_obj))
            lines: set[int] = set()
            if coverage_of is not None:
                sys.settrace(_trace_lines(coverage_of, lines))
            import pytest
            code = int(pytest.main([*map(str, tests), *PYTEST_ARGS]))
            sys.settrace(None)
            cover_file.write_text(json.dumps(sorted(lines)))
        except BaseException as exc:  # a mutant that breaks compilation or pytest itself: a kill
            print(f"mutation runner child: {exc!r}", file=sys.stderr)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    status = _wait(pid, timeout)
    seconds = time.monotonic() - start
    covered = set(json.loads(cover_file.read_text() or "[]"))
    cover_file.unlink()
    return status, seconds, covered


def _wait(pid: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return SURVIVED if os.waitstatus_to_exitcode(status) == 0 else KILLED
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return TIMEOUT
        time.sleep(0.05)


def tests_of(path: Path) -> tuple[list[Path], list[Path]]:
    """The tests of module ``path``: (its own test files, the rest of the folder). The folder mirrors the module's
    (trgnet_fast/losses/terms.py -> tests/losses/); its own files are those whose name ends in a word of the
    module's name (test_loss_terms.py for terms.py, test_loss_trgnet.py for trgnet_loss.py)."""
    rel = path.parent.relative_to(SOURCE)
    folder = ROOT / "tests" / rel
    while not folder.is_dir() and folder != ROOT / "tests":
        folder = folder.parent
    files = sorted(folder.glob("test_*.py"))
    words = set(path.stem.split("_"))
    own = [f for f in files if f.stem.split("_")[-1] in words]
    return (own, [f for f in files if f not in own]) if own else (files, [])


# ----------------------------------------------------------------------------------------------
# the run

def warm_imports(modules: list[str]) -> None:
    """Import here, once, the third-party modules that ``modules`` and their tests import, so that each forked
    child starts with them loaded (a child imports only trgnet_fast and the tests)."""
    probe = ("import importlib, sys, pytest, hypothesis\n"
             f"for m in {modules!r}: importlib.import_module(m)\n"
             "print('\\n'.join(n for n, mod in list(sys.modules.items()) if '.' not in n and "
             f"not (getattr(mod, '__file__', None) or '').startswith({str(ROOT)!r})))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{sys.executable} cannot import {modules} (run this with the project's venv):\n"
                         f"{proc.stderr}")
    names = proc.stdout.split()
    for name in names:
        if name != "trgnet_fast" and name not in sys.modules:
            try:
                importlib.import_module(name)
            except Exception:  # a module only importable in its own context: the child imports it
                pass
    from hypothesis import settings
    # no example database in the checkout; no deadline (a busy machine must not kill mutants)
    settings.register_profile("mutation", database=None, deadline=None)
    settings.load_profile("mutation")


def targets(packages: list[str], modules: list[str]) -> list[Path]:
    paths = [p for pkg in packages for p in sorted(SOURCE.glob(PACKAGES[pkg]))]
    paths += [Path(m).resolve() for m in modules]
    for p in paths:
        if not p.is_file() or SOURCE not in p.parents:
            raise SystemExit(f"--module: expected a .py file under {SOURCE}, got {p}")
    return list(dict.fromkeys(paths))


def package_of(path: Path) -> str:
    rel = path.relative_to(SOURCE).parts
    return "ops" if rel[0] == "ops" else rel[0]


def run_module(path: Path, selected: set[int] | None, log: Path, timeout: float | None, report) -> None:
    tree = ast.parse(path.read_text(), str(path))
    mutants = mutants_of(path, tree)
    if selected is not None and not any(p == path for p, _ in selected):
        return
    own, rest = tests_of(path)
    base_status, base_time, covered = run_child(own + rest, log, timeout=3600, coverage_of=path)
    if base_status != SURVIVED:
        print(f"{path.relative_to(ROOT)}: its tests fail without a mutant (log: {log}); skipped", flush=True)
        return
    limit = timeout or max(60.0, 3 * base_time)
    print(f"{path.relative_to(ROOT)}: {len(mutants)} mutants, tests {[str(f.relative_to(ROOT)) for f in own]}"
          f" then {len(rest)} more files, baseline {base_time:.0f} s", flush=True)
    for i, m in enumerate(mutants):
        if selected is not None and (path, i) not in selected:
            continue
        if not covered & set(range(m.line, m.end_line + 1)):
            status, seconds = UNCOVERED, 0.0
        else:
            status, seconds, _ = run_child(own, log, limit, (m, tree))
            if status == SURVIVED and rest:
                status, more, _ = run_child(rest, log, limit, (m, tree))
                seconds += more
        report(m, status, seconds)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", action="append", default=[], choices=sorted(PACKAGES),
                        help="mutate every module of trgnet_fast/<package>/ (ops: each op's reference.py)")
    parser.add_argument("--module", action="append", default=[], help="mutate this file (repeatable)")
    parser.add_argument("--max-mutants", type=int, help="run at most this many mutants")
    parser.add_argument("--sample", type=int, metavar="SEED", help="pick the mutants at random with this seed")
    parser.add_argument("--timeout", type=float, help="seconds per mutant (default: 3x the unmutated run, >= 60)")
    parser.add_argument("--out", default="build/mutation/results.json", help="JSON results (written as it goes)")
    parser.add_argument("--keyword", metavar="EXPR",
                        help="pytest -k expression selecting the tests (e.g. 'not triton': without the Triton "
                             "interpreter's cases, minutes per run in tests/model and tests/ops)")
    args = parser.parse_args(argv)
    if not args.package and not args.module:
        parser.error("give --package or --module")
    os.chdir(ROOT)
    if args.keyword:
        PYTEST_ARGS.extend(["-k", args.keyword])
    paths = targets(args.package, args.module)
    every = [(p, i) for p in paths for i in range(len(mutants_of(p, ast.parse(p.read_text()))))]
    if args.sample is not None:
        random.Random(args.sample).shuffle(every)
    selected = set(every[:args.max_mutants]) if args.max_mutants is not None else None
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.with_suffix(".log")
    log.write_text("")
    results = {"args": vars(args), "summary": {}, "mutants": []}

    def report(m: Mutant, status: str, seconds: float) -> None:
        results["mutants"].append({**m.record(), "status": status, "seconds": round(seconds, 1)})
        pkg = results["summary"].setdefault(package_of(m.path), {"total": 0, KILLED: 0, TIMEOUT: 0, SURVIVED: 0})
        pkg["total"] += 1
        pkg[SURVIVED if status == UNCOVERED else status] += 1
        pkg["score"] = f"{100 * pkg[KILLED] / pkg['total']:.1f} %"
        out.write_text(json.dumps(results, indent=1))
        print(f"  {status:8} {m.record()['file']} {m.mutation}", flush=True)

    warm_imports([module_name(p) for p in paths])
    for path in paths:
        run_module(path, selected, log, args.timeout, report)
    print(json.dumps(results["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
