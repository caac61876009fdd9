"""``python -m inherit``: which backend is active here and why; ``check`` proves it live.

Exit status: 0 for a report or a check that passed; 1 when the backend cannot
be used (an invalid or unavailable ``INHERIT_BACKEND``) or a check found a
leak; 2 for bad arguments (argparse's convention). Reports and results go to
stdout, errors to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__

PROG = "python -m inherit"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        # The generated usage would read "COMMAND ...", as if a command were required.
        usage="%(prog)s [-h] [--version] [--json] [check [--route ROUTE] [--timeout SECONDS]]",
        description=(
            "Without a command: report which zero-on-fork backend is active here and why it was chosen. "
            "With 'check': prove it by forking."
        ),
        epilog=(
            "Set INHERIT_BACKEND=madvise|minherit|getpid to require a backend. "
            "Installed with: pip install pyinherit (the package it installs is inherit)."
        ),
    )
    # The distribution's name: `pip install pyinherit` installs the `inherit` package.
    parser.add_argument("--version", action="version", version=f"pyinherit {__version__}")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands (optional)")
    check = commands.add_parser(
        "check",
        help="fork over every available route and check that children read zeros",
        description=(
            "Fill zero-on-fork regions, fork by every route available here and report, per route, "
            "whether the child read zeros and saw a new generation. Exit status 1 if anything leaked."
        ),
    )
    # SUPPRESS: an absent flag must not overwrite `python -m inherit --json check`.
    check.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print the results as JSON"
    )
    check.add_argument(
        "--route",
        action="append",
        dest="routes",
        metavar="ROUTE",
        help="check only this route (repeatable; default: every available route)",
    )
    check.add_argument(
        "--timeout",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="seconds to wait for each child (default: 30)",
    )
    return parser


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


def format_report(data: dict[str, Any]) -> str:
    """The human-readable form of :func:`inherit.diagnostics`."""
    lines: list[str] = []
    if data["backend"] is not None:
        how = (
            "the kernel wipes zero-on-fork memory" if data["kernel_wipes"] else "the library wipes on access"
        )
        lines.append(f"inherit {data['inherit']}: backend {data['backend']} ({how})")
    else:
        lines.append(f"inherit {data['inherit']}: no usable backend (the error is on stderr)")
    lines.append("")

    def section(title: str, rows: list[tuple[str, Any]]) -> None:
        lines.append(title)
        width = max(len(key) for key, _ in rows)
        for key, value in rows:
            lines.append(f"  {key:<{width}}  {_text(value)}")
        lines.append("")

    section(
        "Backend",
        [
            ("active", data["backend"]),
            ("requested", data["requested"] or "- (INHERIT_BACKEND is not set)"),
            ("reason", data["reason"]),
            ("verification", data["verification"]),
            ("detail", data["verification_detail"]),
            ("verdict cache", data["cache"] or "- (none used)"),
            ("cache directory", data["cache_dir"]),
            ("restore detection", data["restore_detection"]),
        ],
    )
    lines.append("Candidates (best first)")
    verdicts = {v["backend"]: v for v in data["verdicts"]}
    names = list(data["candidates"])
    names += [name for name in verdicts if name not in names]
    width = max(len(name) for name in names) if names else 0
    for name in names:
        verdict = verdicts.get(name)
        outcome = f"{verdict['outcome']}: {verdict['detail']}" if verdict else "not tried"
        lines.append(f"  {name:<{width}}  {outcome}")
    lines.append("")
    section(
        "Platform",
        [
            ("distribution", f"pyinherit {data['inherit']} (pip install pyinherit)"),
            ("platform", f"{data['platform']} ({data['system']})"),
            ("release", data["release"]),
            ("version", data["os_version"]),
            ("machine", data["machine"]),
            ("python", f"{data['python']} ({data['implementation']})"),
            ("executable", data["executable"]),
        ],
    )
    return "\n".join(lines).rstrip()


def _report(as_json: bool) -> int:
    from ._diagnostics import report

    data = report()
    print(json.dumps(data, indent=2) if as_json else format_report(data))
    if data["backend"] is None:
        _error(PROG, data["error"])
        return 1
    return 0


def _error(prog: str, message: object) -> None:
    """An error on stderr, after what stdout already holds (argparse's form)."""
    sys.stdout.flush()
    print(f"{prog}: error: {message}", file=sys.stderr)


def _check(as_json: bool, routes: list[str] | None, timeout: float) -> int:
    from ._check import format_table, run_check
    from .testing import ROUTES, available_routes

    if routes:
        unknown = [r for r in routes if r not in ROUTES]
        if unknown:
            _error(f"{PROG} check", f"unknown route {unknown[0]!r}; choose from {', '.join(ROUTES)}")
            return 2
        missing = [r for r in routes if r not in available_routes()]
        if missing:
            from .testing import unavailable_reason

            why = unavailable_reason(missing[0]) or "not offered on this platform"
            _error(f"{PROG} check", f"route {missing[0]!r} is not available here: {why}")
            return 2
    result = run_check(routes or None, timeout)
    if as_json:
        print(json.dumps(result.as_dict(), indent=2))
    elif result.error is None:
        print(format_table(result))
    if result.error is not None:
        _error(f"{PROG} check", f"cannot run: {result.error}")
    return 0 if result.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "check":
            status = _check(args.json, args.routes, args.timeout)
        else:
            status = _report(args.json)
        sys.stdout.flush()  # here, not at exit: a reader that went away is handled below
        return status
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, as other command-line tools do.
        # stdout goes to /dev/null so the interpreter's final flush cannot fail again.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1


if __name__ == "__main__":
    sys.exit(main())
