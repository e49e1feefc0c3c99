"""The ``flowjax-thesis`` command.

    flowjax-thesis list
    flowjax-thesis run NAME [--profile smoke|cpu|full] [--set key=value ...] [--out DIR] [--resume]
    flowjax-thesis reproduce [--profile smoke|cpu|full] [--only NAME ...] [--out DIR]
    flowjax-thesis bench NAME [--out DIR] [--set key=value ...]

A run directory holds ``config.json``, ``metrics.jsonl``, ``summary.json``, ``figures/`` and
``checkpoints/``. ``reproduce`` runs every experiment and writes ``report.md`` setting each result
beside the thesis's (or blog's) own numbers. Multi-host runs: set ``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` and start the same command on every host.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

from flowjax_thesis import experiments
from flowjax_thesis.runs import Run, to_jsonable, write_json


class UserError(Exception):
    """An error caused by the command line; printed without a traceback."""


def parse_sets(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


def fresh_dir(path: str, resume: bool) -> str:
    """``path`` itself if new (or when resuming); otherwise ``path-2``, ``path-3``, ... so that
    an earlier run's outputs are never overwritten."""
    if resume or not os.path.exists(path) or not os.listdir(path):
        os.makedirs(path, exist_ok=True)
        return path
    i = 2
    while os.path.exists(f"{path}-{i}") and os.listdir(f"{path}-{i}"):
        i += 1
    os.makedirs(f"{path}-{i}", exist_ok=True)
    return f"{path}-{i}"


def run_experiment(name: str, profile: str, overrides: dict, out: str, quiet=False) -> dict:
    try:
        exp = experiments.get(name)
        cfg = exp.config(profile, overrides)
    except (KeyError, ValueError) as err:
        raise UserError(err.args[0]) from None
    run = Run(out, quiet=quiet)
    run.write_config({"experiment": name, "profile": profile, **cfg})
    run.print(f"== {name} (profile {profile}) -> {out}")
    start = time.time()
    try:
        summary = exp.fn(cfg, run)
    finally:
        run.close()
    summary = dict(summary or {})
    summary.setdefault("wall_seconds", round(time.time() - start, 2))
    run.write_summary(summary)
    return summary


def cmd_list(_args) -> int:
    for name in experiments.names():
        exp = experiments.get(name)
        print(f"{name:28s} {exp.description}")
    return 0


def cmd_run(args) -> int:
    from flowjax_thesis.train import maybe_initialize_distributed

    maybe_initialize_distributed()
    out = args.out or os.path.join("runs", f"{args.name}-{args.profile}")
    out = fresh_dir(out, args.resume)
    summary = run_experiment(args.name, args.profile, parse_sets(args.set), out)
    print(json.dumps(to_jsonable(summary), indent=2, sort_keys=True))
    return 0


def _scalars(d: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(_scalars(v, key + "."))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            flat[key] = v
    return flat


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_report(path: str, profile: str, results: list[tuple[str, str, dict | None, str]]) -> None:
    lines = [f"# flowjax_thesis reproduction report (profile `{profile}`)", ""]
    lines.append(
        "Each section sets our numbers beside the source's. `smoke` runs are tiny and only "
        "show that everything runs end to end; compare numbers at `cpu` or `full`."
    )
    for name, out, summary, error in results:
        exp = experiments.get(name)
        lines += ["", f"## {name}", "", exp.description, "", f"Run directory: `{out}`", ""]
        if error:
            lines += ["**failed**:", "", "```", error.strip()[-2000:], "```"]
            continue
        rows = summary.get("comparison") if summary else None
        if rows:
            keys = list(rows[0].keys())
            lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            for row in rows:
                lines.append("| " + " | ".join(_fmt(row.get(k, "")) for k in keys) + " |")
            lines.append("")
        flat = _scalars({k: v for k, v in (summary or {}).items() if k != "comparison"})
        if flat:
            lines += ["| quantity | ours |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in flat.items()]
        if exp.paper:
            lines += ["", "Source's numbers:", ""]
            lines += [f"- {k}: {_fmt(v)}" for k, v in _scalars(exp.paper).items()]
        figures = sorted(Path(out, "figures").glob("*.png"))
        for fig in figures:
            rel = os.path.relpath(fig, os.path.dirname(path))
            lines.append(f"\n![{fig.stem}]({rel})")
    Path(path).write_text("\n".join(lines) + "\n")


def cmd_reproduce(args) -> int:
    from flowjax_thesis.train import maybe_initialize_distributed

    maybe_initialize_distributed()
    names = args.only or experiments.names()
    for name in names:
        try:
            experiments.get(name)
        except KeyError as err:
            raise UserError(err.args[0]) from None
    root = fresh_dir(args.out or os.path.join("runs", f"reproduce-{args.profile}"), False)
    results, failed = [], []
    for name in names:
        out = os.path.join(root, name)
        try:
            summary = run_experiment(name, args.profile, {}, out)
            results.append((name, out, summary, ""))
        except Exception:  # keep going: the report says what failed
            failed.append(name)
            results.append((name, out, None, traceback.format_exc()))
            print(f"!! {name} failed; see the report", file=sys.stderr)
    report = os.path.join(root, "report.md")
    write_report(report, args.profile, results)
    write_json(
        os.path.join(root, "summary.json"), {name: summary for name, _, summary, _ in results}
    )
    print(f"report: {report}")
    if failed:
        print(f"failed experiments: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _benchmarks_module():
    root = Path(__file__).resolve().parents[1]
    if not (root / "benchmarks" / "__init__.py").exists():
        raise UserError(
            "benchmarks/ was not found next to the package; run from a source checkout "
            "installed with `pip install -e .[bench]`"
        )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module("benchmarks")


def cmd_bench(args) -> int:
    bench = _benchmarks_module()
    if args.name not in bench.BENCHMARKS:
        raise UserError(
            f"unknown benchmark {args.name!r}; available: {', '.join(sorted(bench.BENCHMARKS))}"
        )
    out = fresh_dir(args.out or os.path.join("runs", f"bench-{args.name}"), False)
    result = bench.BENCHMARKS[args.name](**parse_sets(args.set))
    write_json(os.path.join(out, "bench.json"), result)
    print(json.dumps(to_jsonable(result), indent=2, sort_keys=True))
    print(f"written: {os.path.join(out, 'bench.json')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowjax-thesis", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the experiments")
    run = sub.add_parser("run", help="run one experiment")
    run.add_argument("name")
    run.add_argument("--profile", default="smoke", choices=experiments.PROFILES)
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting")
    run.add_argument("--out", help="run directory (default runs/NAME-PROFILE)")
    run.add_argument(
        "--resume",
        action="store_true",
        help="reuse --out and resume from its checkpoints instead of a new directory",
    )
    rep = sub.add_parser("reproduce", help="run every experiment and write a report")
    rep.add_argument("--profile", default="smoke", choices=experiments.PROFILES)
    rep.add_argument("--only", nargs="+", metavar="NAME", help="run only these experiments")
    rep.add_argument("--out", help="output directory (default runs/reproduce-PROFILE)")
    bench = sub.add_parser("bench", help="run a speed benchmark against peer libraries")
    bench.add_argument("name")
    bench.add_argument("--out")
    bench.add_argument("--set", action="append", metavar="KEY=VALUE")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"list": cmd_list, "run": cmd_run, "reproduce": cmd_reproduce, "bench": cmd_bench}
    try:
        return handler[args.command](args)
    except UserError as err:
        print(f"flowjax-thesis: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
