"""The ``flowjax-thesis`` command.

    flowjax-thesis list
    flowjax-thesis run NAME [--profile smoke|cpu|full] [--set key=value ...] [--out DIR] [--resume]
                            [--dry-run]
    flowjax-thesis reproduce [--profile smoke|cpu|full] [--only NAME ...] [--out DIR] [--dry-run]
    flowjax-thesis bench NAME [--out DIR] [--set key=value ...]

A run directory holds ``config.json``, ``metrics.jsonl``, ``summary.json``, ``figures/`` and
``checkpoints/``. ``reproduce`` runs every experiment and writes ``report.md`` setting each result
beside the thesis's (or blog's) own numbers. Multi-host runs: set ``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` and start the same command on every host.

Data: at ``full`` a missing real data set stops the run before any training (the message names
what was looked for, where, and the ``flowjax-thesis data get`` command); ``--set
allow_stand_in=true`` (a setting of every experiment) trains on the offline stand-in instead.
``summary.json`` records the data used (``"data": {"name", "source", "stand_in"}``) and
``report.md`` marks stand-in results. ``--dry-run`` prints the plan (data found or missing,
parameters, steps, batch size, devices and mesh, s/step and peak memory of the first training's
compiled step) without training, and exits 1 when the run could not start.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from flowjax_thesis import experiments
from flowjax_thesis.data import fetch
from flowjax_thesis.data.availability import MissingData, data_policy
from flowjax_thesis.runs import Run, RunDirectoryError, in_use, to_jsonable, write_json
from flowjax_thesis.train.plan import PlanComplete, format_plan, shown_settings, sweep_size


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
    if in_use(path):
        raise UserError(
            f"{path} is in use by a run that has not finished; wait for it, or choose another --out"
        )
    if resume or not os.path.exists(path) or not os.listdir(path):
        os.makedirs(path, exist_ok=True)
        return path
    i = 2
    while os.path.exists(f"{path}-{i}") and os.listdir(f"{path}-{i}"):
        i += 1
    os.makedirs(f"{path}-{i}", exist_ok=True)
    return f"{path}-{i}"


def config_record(name: str, profile: str, cfg, run_opts: dict | None = None) -> dict:
    """What ``config.json`` holds: the experiment, the profile and every setting of ``cfg`` (a
    settings dataclass; tuples become JSON lists), plus the run settings that differ from their
    defaults (``allow_stand_in``)."""
    changed = {k: v for k, v in (run_opts or {}).items() if v != experiments.RUN_SETTINGS.get(k)}
    return to_jsonable(
        {"experiment": name, "profile": profile, **dataclasses.asdict(cfg), **changed}
    )


def check_resume(
    out: str, name: str, profile: str, cfg, force: bool, run_opts: dict | None = None
) -> None:
    """Refuses ``--resume`` into another experiment's directory or with a changed config (unless
    ``force``; the earlier config and summary are then kept beside the new ones). ``cfg`` is the
    settings dataclass; it is compared with the saved JSON, so a tuple equals the saved list."""
    path = os.path.join(out, "config.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        saved = json.load(f)
    if saved.get("experiment") != name:
        raise UserError(
            f"{out} holds a run of experiment {saved.get('experiment')!r}, not {name!r}; "
            "--resume it with that name or choose another --out"
        )
    new = config_record(name, profile, cfg, run_opts)
    differ = sorted(k for k in set(saved) | set(new) if saved.get(k) != new.get(k))
    if not differ:
        return
    if not force:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {new.get(k)!r}" for k in differ[:8])
        raise UserError(
            f"--resume with a config that differs from the one saved in {out} ({shown}); "
            "resume with the same settings, or add --force to continue with the new ones"
        )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name_ in ("config.json", "summary.json"):
        old_path = os.path.join(out, name_)
        if os.path.exists(old_path):
            os.replace(old_path, os.path.join(out, f"{name_[:-5]}.before-{stamp}.json"))


def _resolve(name: str, profile: str, overrides: dict):
    """``(experiment, settings, run settings)``; bad names and settings are a :class:`UserError`."""
    try:
        exp = experiments.get(name)
        return exp, exp.config(profile, overrides), experiments.run_settings(overrides)
    except (KeyError, ValueError, TypeError) as err:
        raise UserError(err.args[0]) from None


STRICT_WHY = "The full profile does not train on stand-in data"


def run_experiment(
    name: str,
    profile: str,
    overrides: dict,
    out: str,
    quiet=False,
    resume: bool = False,
    force: bool = False,
) -> dict:
    """Runs one experiment into ``out``. Its loaders run under the run's data policy (at
    ``full`` a missing data set stops the run before any training, unless ``allow_stand_in``:
    :class:`~flowjax_thesis.data.availability.MissingData`), and ``summary.json``'s ``"data"``
    records the data sets they loaded (name, source, stand_in)."""
    exp, cfg, run_opts = _resolve(name, profile, overrides)
    if resume:
        check_resume(out, name, profile, cfg, force, run_opts)
    try:
        run = Run(out, quiet=quiet, profile=profile, allow_stand_in=run_opts["allow_stand_in"])
    except RunDirectoryError as err:
        raise UserError(str(err)) from None
    try:
        run.write_config(config_record(name, profile, cfg, run_opts))
        run.print(f"== {name} (profile {profile}) -> {out}" + (" (resuming)" if resume else ""))
        start = time.time()
        with data_policy(run.strict_data, STRICT_WHY) as data_log:
            try:
                summary = dict(exp.fn(cfg, run) or {})
            except MissingData as err:
                run.print(f"stopped before training: {err}")
                raise
        summary["data"] = data_record(summary.get("data"), data_log)
        summary.setdefault("wall_seconds", round(time.time() - start, 2))
        run.write_summary(summary)
    finally:
        run.close()
    return summary


def data_record(reported, data_log) -> dict:
    """``summary["data"]``: what the loaders recorded (``name``, ``source``, ``stand_in``),
    merged into what the experiment reported itself (a dict keeps its extra fields; a string
    is kept as ``"detail"``)."""
    record = data_log.summary() or {
        "name": "generated",
        "source": "no data set loaded (generated data or analytic targets)",
        "stand_in": False,
    }
    if isinstance(reported, dict):
        return {**reported, **record}
    if reported is not None and reported != record["source"]:
        return {**record, "detail": reported}
    return record


def dry_run_experiment(name: str, profile: str, overrides: dict) -> dict:
    """Plans ``name`` without training (``--dry-run``): runs it in a temporary directory with
    ``run.dry_run`` until its first ``fit`` has compiled and timed its step
    (:mod:`flowjax_thesis.train.plan`), or until a loader finds its data missing. Returns the
    record :func:`~flowjax_thesis.train.plan.format_plan` prints; ``"ready"`` is False when the
    run could not start."""
    import jax

    exp, cfg, run_opts = _resolve(name, profile, overrides)
    record = {
        "experiment": name,
        "profile": profile,
        "settings": shown_settings(cfg),
        "devices": [f"{d.platform}:{d.id} ({d.device_kind})" for d in jax.devices()],
        "missing": None,
        "training": None,
        "trainings": sweep_size(cfg),
        "estimate_hours": None,
        "outcome": "",
    }
    start = time.time()
    with tempfile.TemporaryDirectory(prefix=f"flowjax-dry-run-{name}-") as tmp:
        run = Run(
            tmp,
            quiet=True,
            profile=profile,
            allow_stand_in=run_opts["allow_stand_in"],
            dry_run=True,
        )
        try:
            with data_policy(run.strict_data, STRICT_WHY) as data_log:
                try:
                    exp.fn(cfg, run)
                    record["outcome"] = "it trains nothing through fit: the dry run ran it whole"
                except PlanComplete as done:
                    plan = done.plan.as_dict()
                    record["training"] = plan
                    hours = plan["estimate_seconds"] * record["trainings"] / 3600
                    record["estimate_hours"] = hours
                    record["outcome"] = "planned"
                except MissingData as err:
                    record["missing"] = str(err)
                    record["outcome"] = "missing data"
        finally:
            run.close()
    record["data"] = data_log.summary()
    record["ready"] = record["missing"] is None
    record["wall_seconds"] = time.time() - start
    return record


def cmd_list(_args) -> int:
    for name in experiments.names():
        exp = experiments.get(name)
        print(f"{name:28s} {exp.description}")
    return 0


def cmd_run(args) -> int:
    from flowjax_thesis.train import maybe_initialize_distributed

    maybe_initialize_distributed()
    if args.dry_run:
        record = dry_run_experiment(args.name, args.profile, parse_sets(args.set))
        print(format_plan(record))
        return 0 if record["ready"] else 1
    out = args.out or os.path.join("runs", f"{args.name}-{args.profile}")
    if args.resume and not os.path.isdir(out):
        raise UserError(f"--resume: {out} does not exist; there is nothing to resume")
    fresh = not os.path.exists(out) or not os.listdir(out)
    out = fresh_dir(out, args.resume)
    try:
        summary = run_experiment(
            args.name, args.profile, parse_sets(args.set), out, resume=args.resume, force=args.force
        )
    except MissingData as err:
        if fresh and not args.resume:  # nothing was trained: leave no run directory behind
            shutil.rmtree(out, ignore_errors=True)
        raise UserError(f"{args.name} (profile {args.profile}): {err}") from None
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
    stand_ins = [
        name
        for name, _, summary, _ in results
        if isinstance((summary or {}).get("data"), dict) and summary["data"].get("stand_in")
    ]
    if stand_ins:
        lines += [
            "",
            "**Stand-in data** (offline replacements, not the source's data sets): "
            + ", ".join(f"`{n}`" for n in stand_ins)
            + ".",
        ]
    for name, out, summary, error in results:
        exp = experiments.get(name)
        lines += ["", f"## {name}", "", exp.description, "", f"Run directory: `{out}`", ""]
        if error:
            lines += ["**failed**:", "", "```", error.strip()[-2000:], "```"]
            continue
        data = (summary or {}).get("data")
        if isinstance(data, dict) and data.get("stand_in"):
            lines += [
                f"**Stand-in data**: {data.get('name')} -- {data.get('source')}. These numbers "
                "are not on the source's data set.",
                "",
            ]
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
    sets = parse_sets(args.set)
    other = sorted(set(sets) - set(experiments.RUN_SETTINGS))
    if other:
        raise UserError(
            f"reproduce --set takes the run settings every experiment has "
            f"({', '.join(experiments.RUN_SETTINGS)}), got {', '.join(other)}"
        )
    if args.dry_run:
        return dry_run_all(names, args.profile, sets)
    root = fresh_dir(args.out or os.path.join("runs", f"reproduce-{args.profile}"), False)
    results, failed = [], []
    for name in names:
        out = os.path.join(root, name)
        try:
            summary = run_experiment(name, args.profile, sets, out)
            results.append((name, out, summary, ""))
        except MissingData as err:  # stopped before training: say why in one line
            failed.append(name)
            results.append((name, out, None, f"missing data: {err}"))
            print(f"!! {name}: {err}", file=sys.stderr)
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


def dry_run_all(names: list[str], profile: str, overrides: dict) -> int:
    """``reproduce --dry-run``: every experiment's plan, then one line each; 1 if any cannot
    run."""
    records = []
    for name in names:
        try:
            record = dry_run_experiment(name, profile, overrides)
            print(format_plan(record) + "\n", flush=True)
        except Exception as err:  # keep planning the others; this one cannot run
            record = {"experiment": name, "ready": False, "training": None}
            record |= {"estimate_hours": None, "missing": None}
            print(f"== plan: {name}: failed: {type(err).__name__}: {one_line(err)}\n", flush=True)
        records.append(record)
    print(f"{'experiment':28s} {'status':12s} {'first training':>16s} {'whole (rough)':>14s}")
    for r in records:
        first = r["training"]["estimate_seconds"] / 3600 if r["training"] else None
        cells = [f"{first:.3g} h" if first is not None else "-"]
        cells.append(f"{r['estimate_hours']:.3g} h" if r["estimate_hours"] is not None else "-")
        status = "ready" if r["ready"] else ("MISSING DATA" if r["missing"] else "FAILED")
        print(f"{r['experiment']:28s} {status:12s} {cells[0]:>16s} {cells[1]:>14s}")
    blocked = [r["experiment"] for r in records if not r["ready"]]
    if blocked:
        print(f"cannot run (missing data or failed): {', '.join(blocked)}", file=sys.stderr)
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


def cmd_report(args) -> int:
    from flowjax_thesis import report

    table = report.results_table(args.results)
    if args.check:
        if report.readme_table(args.check) != table:
            raise UserError(
                f"the results table in {args.check} differs from the committed runs under "
                f"{args.results}; regenerate it with: flowjax-thesis report --readme {args.check}"
            )
        print(f"{args.check}: the results table matches {args.results}")
        return 0
    if args.readme:
        changed = report.update_readme(args.readme, table)
        print(f"{args.readme}: results table {'updated' if changed else 'already up to date'}")
        return 0
    print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowjax-thesis", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
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
    run.add_argument(
        "--force",
        action="store_true",
        help="with --resume: accept settings that differ from the saved config",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (data, sizes, steps, devices, s/step, memory) without training",
    )
    rep = sub.add_parser("reproduce", help="run every experiment and write a report")
    rep.add_argument("--profile", default="smoke", choices=experiments.PROFILES)
    rep.add_argument("--only", nargs="+", metavar="NAME", help="run only these experiments")
    rep.add_argument("--out", help="output directory (default runs/reproduce-PROFILE)")
    rep.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="a run setting for every experiment (allow_stand_in=true)",
    )
    rep.add_argument(
        "--dry-run", action="store_true", help="print every experiment's plan without training"
    )
    bench = sub.add_parser("bench", help="run a speed benchmark against peer libraries")
    bench.add_argument("name")
    bench.add_argument("--out")
    bench.add_argument("--set", action="append", metavar="KEY=VALUE")
    report = sub.add_parser(
        "report", help="the README's results table from the committed runs in docs/results"
    )
    report.add_argument("--results", default=os.path.join("docs", "results"))
    report.add_argument("--readme", help="write the table into this README (between its markers)")
    report.add_argument("--check", metavar="README", help="fail if README's table is stale")
    fetch.add_data_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = {"list": cmd_list, "run": cmd_run, "reproduce": cmd_reproduce, "bench": cmd_bench}
    handler["report"] = cmd_report
    handler["data"] = fetch.cmd_data
    try:
        return handler[args.command](args)
    except UserError as err:
        print(f"flowjax-thesis: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        detail = f": {err}" if str(err) else ""
        print(f"flowjax-thesis: interrupted{detail}; --resume continues", file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug:
            raise
        print(f"flowjax-thesis: error: {type(err).__name__}: {one_line(err)}", file=sys.stderr)
        print("(run again with --debug for the traceback)", file=sys.stderr)
        return 1


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:600] + (" ..." if len(text) > 600 else "")


if __name__ == "__main__":
    sys.exit(main())
