"""``python -m benchmarks.peers planar|realnvp --steps N``: print a JSON list of results.

Each peer runs in its own fresh Python process, one after another (the machine has 2
cores, and a torch peer should not share a process with an idle XLA runtime); pass
``--in-process`` to run them all in this process instead.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import traceback
from typing import Any

_ONE = "_one"  # internal sub-command: run one peer, print its JSON record


def _peer_table(suite: str) -> dict[str, Any]:
    from benchmarks.peers import PLANAR_PEERS, REALNVP_PEERS

    return PLANAR_PEERS if suite == "planar" else REALNVP_PEERS


def _run_one(suite: str, name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    try:
        return _peer_table(suite)[name](**kwargs)
    except ImportError as err:
        return {"peer": name, "error": str(err), **kwargs}
    except Exception as err:  # keep going: report the failure in the JSON
        traceback.print_exc(file=sys.stderr)
        return {"peer": name, "error": repr(err), **kwargs}


def _run_isolated(suite: str, name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.peers", _ONE, suite, name, json.dumps(kwargs)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return {"peer": name, "error": f"subprocess exited {proc.returncode}", **kwargs}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [_ONE]:
        _, suite, name, kwargs = argv
        print(json.dumps(_run_one(suite, name, json.loads(kwargs))), flush=True)
        return 0

    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__)
    parser.add_argument("suite", choices=["planar", "realnvp"])
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps per peer (planar 2000, realnvp 300)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--peers", default=None, help="comma-separated subset of peer names")
    parser.add_argument("--configs", default="d2,d43", help="realnvp configurations")
    parser.add_argument("--in-process", action="store_true", help="no subprocess per peer")
    args = parser.parse_args(argv)

    from benchmarks.peers import REALNVP_CONFIGS

    table = _peer_table(args.suite)
    names = list(table) if args.peers is None else args.peers.split(",")
    unknown = [n for n in names if n not in table]
    if unknown:
        parser.error(f"unknown peers {unknown}; choose from {list(table)}")

    jobs: list[tuple[str, dict[str, Any]]] = []
    if args.suite == "planar":
        steps = 2000 if args.steps is None else args.steps
        jobs = [(n, {"steps": steps, "seed": args.seed}) for n in names]
    else:
        steps = 300 if args.steps is None else args.steps
        for cfg in args.configs.split(","):
            if cfg not in REALNVP_CONFIGS:
                parser.error(f"unknown config {cfg!r}; choose from {list(REALNVP_CONFIGS)}")
            jobs += [
                (n, {"steps": steps, "seed": args.seed, **REALNVP_CONFIGS[cfg]}) for n in names
            ]

    run = _run_one if args.in_process else _run_isolated
    results = []
    for name, kwargs in jobs:  # strictly one at a time
        results.append(run(args.suite, name, kwargs))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(json.dumps(results, indent=2))
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
