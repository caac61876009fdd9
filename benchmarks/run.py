"""Benchmarks: every figure beside the idiom users have today, measured in one run.

    python benchmarks/run.py                  # every implementation and backend that works here
    python benchmarks/run.py --instructions   # also callgrind instruction counts
    python benchmarks/run.py --quick          # fewer rounds and runs
    python benchmarks/run.py --json out.json  # also write every number as JSON
    python benchmarks/run.py --markdown       # also the tables for docs/benchmarks.md and README
    python benchmarks/run.py --render out.json --markdown   # print a saved run again

It measures whatever ``inherit`` the running interpreter imports. Each
(implementation, backend) pair runs in its own fresh interpreter, because the
backend and the implementation are chosen once per process: the accelerated
one (the default, when ``inherit.diagnostics()["accelerated"]`` says it is
active) and the pure-Python one (``INHERIT_PURE_PYTHON=1``), on
``INHERIT_BACKEND=madvise``, ``minherit`` and ``getpid``; one that raises
``inherit.BackendUnavailable`` is skipped with its reason.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "worker.py")
BACKENDS = ("madvise", "minherit", "getpid")
IMPLEMENTATIONS = ("accelerated", "pure")
IMPL_NAMES = {"accelerated": "accelerated", "pure": "pure Python"}
KIB, MIB = 1024, 1024 * 1024

# Targets from the issue, as ratios against the baseline. "getpid" overrides
# the implementation's target on the getpid backend; None there means "report
# only". Figure 10 shares figure 3's targets.
TARGETS: dict[str, dict[str, float | None]] = {
    "guard": {"accelerated": 0.22, "pure": 0.30, "getpid": None},
    "generation": {"accelerated": None, "pure": None, "getpid": 1.10},
    "forklocal": {"accelerated": 0.15, "pure": 0.55, "getpid": 1.15},
    "process": {"accelerated": 1.10, "pure": 1.22},
    "alloc": {"accelerated": 5.0, "pure": 12.0, "getpid": 15.0},
    "random": {"accelerated": 1.3, "pure": 2.5, "getpid": 7.0},
    "cache": {"accelerated": 1.25, "pure": 1.8, "getpid": 3.5},
}
TARGETS["touched"] = TARGETS["forklocal"]
MEMORY_TARGET = {"bytes": 2 * MIB, "vmas": 64}
FORK_TARGET_NS = 1_000_000  # first calls in a child with 10^5 live ForkLocals
FORK_SIZES = (1, 1_000, 10_000, 100_000)  # as in worker.py

# number, short title, baseline (as users write it today), subject
FIGURES: dict[str, tuple[str, str, str, str]] = {
    "guard": (
        "1",
        "fork check in a method",
        "`if self.pid != os.getpid(): ...; return self.conn`",
        "`if self.gen != inherit.generation(): ...; return self.conn`",
    ),
    "generation": ("2", "the check alone", "`os.getpid()`", "`inherit.generation()`"),
    "forklocal": ("3", "ForkLocal attribute read", "the getpid-guarded method", "`local.conn`"),
    "process": (
        "4",
        "whole process",
        '`python -c "import os"`',
        '`python -c "import inherit; inherit.zero_on_fork(32); inherit.generation()"`',
    ),
    "first_use": (
        "4",
        "import + first use, in process",
        "",
        "`import inherit; zero_on_fork(32); generation()`",
    ),
    "alloc": ("5", "allocate + close 32 bytes", "`bytearray(32)`", "`inherit.zero_on_fork(32).close()`"),
    "random": ("6", "a draw", "`random.Random().random()`", "`inherit.Random().random()`"),
    "cache": ("7", "a cache hit", "`functools.lru_cache` hit", "`inherit.per_process_cache` hit"),
    "memory": ("8", "10,000 regions of 32 bytes", "one page each", "wipe-on-fork memory (smaps `wf`)"),
    "fork_cost": ("9", "first calls in a child", "", "at-fork hooks + first `generation()` + first read"),
    "touched": (
        "10",
        "ForkLocal read in a child, 10^5 others untouched",
        "the getpid-guarded method, in the child",
        "read of an instance already touched in the child",
    ),
    "vmclock": ("11", "`generation()` with VM-restore detection active", "", ""),
}
ROUTES = {"os.fork": "os.fork()", "libc": "libc fork() via ctypes"}

METHOD = (
    "Wall time per call is the minimum over {rounds} interleaved rounds of timeit (in every round the "
    "baseline and the subject of a figure run back to back, and the order reverses every other round, "
    "so both see the same machine state). Whole processes: {runs} interleaved runs of each command, "
    "min and median, ratio of the minimums. Fork figures: minimum over {reps} children per route."
)
METHOD_INSTR = (
    "Instructions: valgrind --tool=callgrind; per call = ((2N loop) - (N loop) - (empty 2N loop - empty N "
    "loop)) / N with N = {n}, so startup and loop overhead cancel; whole processes counted once each; "
    "PYTHONHASHSEED=0. "
    "Callgrind counts user space only: a system call counts as its libc wrapper, while getpid() alone "
    "costs about as much as the whole getpid guard in the kernel, so instruction ratios get a verdict only "
    "where neither side makes a system call per call (figures 5-7 on a kernel backend)."
)
# Figures whose baseline and subject make no system call per call on a kernel backend.
SYSCALL_FREE = {"alloc", "random", "cache"}


# ---------------------------------------------------------------- running


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    # Users' installs have bytecode; measuring without it times the compiler.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    for name in ("INHERIT_BACKEND", "INHERIT_PURE_PYTHON", "INHERIT_VMCLOCK"):
        env.pop(name, None)
    return env


def config_env(impl: str, backend: str) -> dict[str, str]:
    env = base_env()
    env["INHERIT_BACKEND"] = backend
    if impl == "pure":
        env["INHERIT_PURE_PYTHON"] = "1"
    return env


def run_py(args: list[str], env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], env=env, cwd="/", capture_output=True, text=True, timeout=timeout
    )


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


def accelerator_state() -> tuple[bool, str]:
    """Whether the default implementation is the accelerated one, and why."""
    env = base_env()
    env["INHERIT_BACKEND"] = "getpid"  # always available; the answer is about the implementation
    code = "import inherit, json; print(json.dumps(inherit.diagnostics().get('accelerated', 'missing')))"
    proc = run_py(["-c", code], env, timeout=120)
    if proc.returncode != 0:
        return False, "inherit.diagnostics() failed: " + last_line(proc.stderr)
    value = json.loads(proc.stdout)
    if value is True:
        return True, "diagnostics()['accelerated'] is True"
    if value == "missing":
        return False, "inherit.diagnostics() has no 'accelerated' key in this version"
    return False, f"diagnostics()['accelerated'] is {value!r} (no accelerator active in this install)"


WARM = (
    "import inherit; inherit.zero_on_fork(32); inherit.generation(); inherit.diagnostics()\n"
    "for name in ('Random', 'per_process_cache'):\n"
    "    getattr(inherit, name, None)\n"
)
FIRST_USE = (
    "import time; t = time.perf_counter(); import inherit; inherit.zero_on_fork(32); "
    "inherit.generation(); print((time.perf_counter() - t) * 1e3)"
)
PROCESS_BASE = ["-c", "import os"]
PROCESS_LIB = ["-c", "import inherit; inherit.zero_on_fork(32); inherit.generation()"]


def process_figure(env: dict[str, str], runs: int) -> dict[str, Any]:
    """Figure 4: whole processes, interleaved, and import + first use in process."""
    base: list[float] = []
    lib: list[float] = []
    first: list[float] = []
    for _ in range(runs):
        for args, sink in ((PROCESS_BASE, base), (PROCESS_LIB, lib)):
            t = time.perf_counter()
            proc = run_py(args, env, timeout=60)
            elapsed = (time.perf_counter() - t) * 1e3
            if proc.returncode != 0:
                return {"na": "the process failed: " + last_line(proc.stderr)}
            sink.append(elapsed)
        proc = run_py(["-c", FIRST_USE], env, timeout=60)
        if proc.returncode != 0:
            return {"na": "first use failed: " + last_line(proc.stderr)}
        first.append(float(proc.stdout))
    return {
        "runs": runs,
        "base_min_ms": min(base),
        "base_median_ms": statistics.median(base),
        "lib_min_ms": min(lib),
        "lib_median_ms": statistics.median(lib),
        "first_use_min_ms": min(first),
        "first_use_median_ms": statistics.median(first),
    }


def valgrind_missing() -> str | None:
    if shutil.which("valgrind") is None:
        return "valgrind is not installed"
    return None


def callgrind_totals(path: str) -> int:
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise ValueError(f"no summary in {path}")


def callgrind(args: list[str], env: dict[str, str], out: str, extra: list[str] | None = None) -> str | None:
    """Run the interpreter under callgrind; None, or why it failed."""
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *(extra or []), sys.executable]
    proc = subprocess.run(cmd + args, env=env, cwd="/", capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if not line.startswith("==")]
        return "under callgrind: " + last_line("\n".join(lines))
    return None


def instructions(env: dict[str, str], n: int) -> dict[str, Any]:
    """Per-call instruction counts (figures 1-3, 5-7), first use, and whole processes."""
    why = valgrind_missing()
    if why:
        return {"na": why}
    out: dict[str, Any] = {"n": n, "per_call": {}}
    env = dict(env, PYTHONHASHSEED="0")  # dict probing depends on the hash seed: fix it to repeat counts
    with tempfile.TemporaryDirectory(prefix="inherit-bench-") as tmp:
        stem = os.path.join(tmp, "loops.out")
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={stem}", "--dump-before=getppid"]
        proc = subprocess.run(
            [*cmd, sys.executable, WORKER, "callgrind", str(n)],
            env=env,
            cwd="/",
            capture_output=True,
            text=True,
            timeout=3600,
        )
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.splitlines() if not line.startswith("==")]
            return {"na": "callgrind run failed: " + last_line("\n".join(lines))}
        probe = json.loads(last_line(proc.stdout))
        if "labels" not in probe:
            return {"na": "under callgrind: " + probe.get("na", "no result")}
        labels: list[str] = probe["labels"]
        dumps = sorted(
            (name for name in os.listdir(tmp) if name.startswith("loops.out.")),
            key=lambda name: int(name.rsplit(".", 1)[1]),
        )
        if len(dumps) != len(labels):
            return {"na": f"callgrind wrote {len(dumps)} profiles for {len(labels)} markers"}
        counts = {
            label: callgrind_totals(os.path.join(tmp, d)) for label, d in zip(labels, dumps, strict=True)
        }
        out["first_use"] = (
            {"na": probe["na"]["first_use"]} if "first_use" in probe["na"] else counts["first_use"]
        )

        def per_iter(label: str) -> float:
            loop = counts[label + ":2n"] - counts[label + ":n"]
            empty = counts["empty:2n"] - counts["empty:n"]
            return (loop - empty) / n

        for key in TARGETS:
            if key + ":subject:2n" in counts and key + ":baseline:2n" in counts:
                out["per_call"][key] = {
                    "baseline": per_iter(key + ":baseline"),
                    "subject": per_iter(key + ":subject"),
                }
            elif key in probe["na"]:
                out["per_call"][key] = {"na": probe["na"][key]}
        for name, args in (("process_base", PROCESS_BASE), ("process_lib", PROCESS_LIB)):
            path = os.path.join(tmp, name + ".out")
            failed = callgrind(args, env, path)
            out[name] = {"na": failed} if failed else callgrind_totals(path)
    return out


def run_config(impl: str, backend: str, opts: argparse.Namespace) -> dict[str, Any]:
    env = config_env(impl, backend)
    result: dict[str, Any] = {"implementation": impl, "backend": backend}
    run_py(["-c", WARM], env, timeout=120)  # write bytecode before anything is timed
    proc = run_py([WORKER, "timing", str(opts.rounds), str(opts.reps)], env)
    if proc.returncode != 0:
        result["skipped"] = "the worker failed: " + last_line(proc.stderr)
        return result
    worker = json.loads(last_line(proc.stdout))
    if "unavailable" in worker:
        result["skipped"] = worker["unavailable"]
        return result
    result["worker"] = worker
    accelerated = bool(worker.get("accelerated"))
    if accelerated != (impl == "accelerated"):
        result["warning"] = f"diagnostics()['accelerated'] is {worker.get('accelerated')!r} in this run"
    result["process"] = process_figure(env, opts.runs)
    if opts.instructions:
        result["instructions"] = instructions(env, opts.instr_n)
    if opts.vmclock:
        venv = dict(env, INHERIT_VMCLOCK=opts.vmclock)
        proc = run_py([WORKER, "timing", str(opts.rounds), "1", "1,2"], venv)
        if proc.returncode != 0:
            result["vmclock"] = {"na": "the worker failed: " + last_line(proc.stderr)}
        else:
            result["vmclock"] = json.loads(last_line(proc.stdout))
    return result


# ---------------------------------------------------------------- evaluating


def target_for(key: str, impl: str, backend: str) -> float | None:
    targets = TARGETS[key]
    if backend == "getpid" and "getpid" in targets:
        return targets["getpid"]
    return targets[impl]


def verdict(value: float | None, target: float | None) -> str | None:
    if value is None or target is None:
        return None
    return "ok" if value <= target else "MISSED"


def ratio_entry(
    key: str, impl: str, backend: str, base: float, subject: float, unit: str, instr: dict[str, Any] | None
) -> dict[str, Any]:
    target = target_for(key, impl, backend)
    entry: dict[str, Any] = {
        "baseline": base,
        "subject": subject,
        "unit": unit,
        "ratio": subject / base,
        "target": target,
        "verdict": verdict(subject / base, target),
    }
    if instr is not None:
        if "na" in instr:
            entry["instr_na"] = instr["na"]
        else:
            ratio = instr["subject"] / instr["baseline"]
            judged = key in SYSCALL_FREE and backend != "getpid"
            entry["instr"] = {
                **instr,
                "ratio": ratio,
                "judged": judged,
                "verdict": verdict(ratio, target) if judged else None,
            }
    return entry


def evaluate(config: dict[str, Any]) -> dict[str, Any]:
    """The figures of one configuration, with ratios, targets and verdicts."""
    impl, backend = config["implementation"], config["backend"]
    worker = config["worker"]
    instr = config.get("instructions")
    figures: dict[str, Any] = {}
    for key, raw in worker["per_call"].items():
        if "na" in raw:
            figures[key] = {"na": raw["na"]}
            continue
        per_instr = None
        if instr is not None:
            per_instr = instr.get("per_call", {}).get(key, {"na": instr.get("na", "not counted")})
        figures[key] = ratio_entry(key, impl, backend, raw["baseline_ns"], raw["subject_ns"], "ns", per_instr)

    # Figures 1 and 3 time the same baseline statement: their spread is a noise check.
    same = [figures[k]["baseline"] for k in ("guard", "forklocal") if "baseline" in figures.get(k, {})]
    if len(same) == 2:
        figures["noise"] = {"getpid_guard_ns": same, "spread": max(same) / min(same)}

    proc = config["process"]
    if "na" in proc:
        figures["process"] = figures["first_use"] = {"na": proc["na"]}
    else:
        proc_instr = None
        if instr is not None:
            if "na" in instr:
                proc_instr = {"na": instr["na"]}
            elif isinstance(instr["process_base"], dict) or isinstance(instr["process_lib"], dict):
                bad = (
                    instr["process_lib"] if isinstance(instr["process_lib"], dict) else instr["process_base"]
                )
                proc_instr = {"na": bad["na"]}
            else:
                proc_instr = {"baseline": instr["process_base"], "subject": instr["process_lib"]}
        entry = ratio_entry(
            "process", impl, backend, proc["base_min_ms"], proc["lib_min_ms"], "ms", proc_instr
        )
        entry["median_ratio"] = proc["lib_median_ms"] / proc["base_median_ms"]
        entry["baseline_median"] = proc["base_median_ms"]
        entry["subject_median"] = proc["lib_median_ms"]
        figures["process"] = entry
        figures["first_use"] = {
            "min_ms": proc["first_use_min_ms"],
            "median_ms": proc["first_use_median_ms"],
            "instr": instr["first_use"] if instr and isinstance(instr.get("first_use"), int) else None,
        }

    mem = worker.get("memory", {"na": "not measured"})
    if "na" in mem:
        figures["memory"] = {"na": mem["na"]}
    else:
        ok = mem["wf_bytes"] <= MEMORY_TARGET["bytes"] and mem["wf_vmas"] <= MEMORY_TARGET["vmas"]
        figures["memory"] = {
            **mem,
            "baseline_bytes": mem["regions"] * mem["page_size"],
            "verdict": "ok" if ok else "MISSED",
        }

    forks = worker.get("forks", {"na": "not measured"})
    if "na" in forks:
        figures["fork_cost"] = figures["touched"] = {"na": forks["na"]}
    else:
        cost: dict[str, Any] = {}
        for route, rows in forks["first"].items():
            cost[route] = []
            for row in rows:
                if "na" in row:
                    cost[route].append(row)
                    continue
                total = row["hooks_ns"] + row["first_generation_ns"] + row["first_read_ns"]
                cost[route].append(
                    {**row, "total_ns": total, "verdict": "ok" if total <= FORK_TARGET_NS else "MISSED"}
                )
            # O(1) in N: the total at 10^5 instances against the total at 10^3.
            total = {r["n"]: r["total_ns"] for r in cost[route] if "na" not in r}
            if 1_000 in total and 100_000 in total:
                cost[route + ":growth"] = total[100_000] / max(total[1_000], 1)
        figures["fork_cost"] = cost
        touched: dict[str, Any] = {}
        for route, raw in forks["touched"].items() if isinstance(forks["touched"], dict) else ():
            if "na" in raw:
                touched[route] = {"na": raw["na"]}
            else:
                touched[route] = ratio_entry(
                    "touched", impl, backend, raw["baseline_ns"], raw["subject_ns"], "ns", None
                )
        figures["touched"] = touched or {"na": forks["touched"].get("na", "not measured")}

    vm = config.get("vmclock")
    if vm is None:
        figures["vmclock"] = {"na": "not measured (pass --vmclock PATH)"}
    elif "na" in vm or "unavailable" in vm:
        figures["vmclock"] = {"na": vm.get("na") or vm.get("unavailable")}
    else:
        figures["vmclock"] = {"restore": vm.get("restore", {})}
        for key in ("guard", "generation"):
            raw = vm["per_call"][key]
            figures["vmclock"][key] = (
                {"na": raw["na"]}
                if "na" in raw
                else ratio_entry(key, impl, backend, raw["baseline_ns"], raw["subject_ns"], "ns", None)
            )
    return figures


# ---------------------------------------------------------------- rendering


def fmt_time(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.1f} ms"
    if value >= 10_000:
        return f"{value / 1000:.1f} µs"
    if value >= 1000:
        return f"{value / 1000:.2f} µs"
    return f"{value:.0f} ns"


def fmt_ms(ns: float) -> str:
    return f"{ns / 1e6:.2f} ms" if ns >= 10_000 else f"{ns / 1e3:.1f} µs"


def fmt_count(n: float) -> str:
    if n >= 1e6:
        return f"{n / 1e6:.1f} M"
    return f"{n:.0f}"


def fmt_target(target: float | None) -> str:
    return f"<= {target:g}x" if target is not None else "report"


def columns(rows: list[list[str]], indent: str = "   ") -> str:
    """Aligned columns; an "n/a: ..." cell with nothing after it may run past its column."""

    def spills(row: list[str], i: int) -> bool:
        return row[i].startswith("n/a") and not any(row[i + 1 :])

    widths = [max(len(row[i]) for row in rows if not spills(row, i)) for i in range(len(rows[0]))]
    lines = []
    for j, row in enumerate(rows):
        lines.append(indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if j == 0:
            lines.append(indent + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def measured(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in run["configs"] if "figures" in c]


def text_report(run: dict[str, Any]) -> str:
    meta = run["meta"]
    out = [
        f"inherit {meta['inherit_version']} from {meta['inherit_path']}",
        f"Python {meta['python']} ({meta['implementation']}) on {meta['system']} {meta['release']} "
        f"{meta['machine']}, {meta['cpus']} CPUs; {meta['date']}",
    ]
    if meta.get("install_note"):
        out.append("note: " + meta["install_note"])
    out.append("implementations: " + meta["implementations_note"])
    for c in run["configs"]:
        name = f"{IMPL_NAMES[c['implementation']]} / {c['backend']}"
        if "skipped" in c:
            out.append(f"skipped {name}: {c['skipped']}")
        if c.get("warning"):
            out.append(f"warning {name}: {c['warning']}")
    for c in measured(run):
        noise = c["figures"].get("noise")
        if noise:
            a, b = noise["getpid_guard_ns"]
            apart = (noise["spread"] - 1) * 100
            out.append(
                f"noise check {IMPL_NAMES[c['implementation']]} / {c['backend']}: the getpid-guarded method "
                f"measured {a:.0f} and {b:.0f} ns in figures 1 and 3 ({apart:.0f}% apart)"
            )
    out += ["", "method: " + meta["method"]]
    if meta.get("method_instr"):
        out.append("        " + meta["method_instr"])
    configs = measured(run)
    instr_on = any("instructions" in c for c in configs)

    def head(key: str) -> str:
        number, title, base, subject = FIGURES[key]
        if not subject:
            return f"\n{number}. {title}"
        return f"\n{number}. {title}: {subject} vs {base}" if base else f"\n{number}. {title}: {subject}"

    for key in ("guard", "generation", "forklocal", "process", "alloc", "random", "cache"):
        out.append(head(key))
        header = ["implementation", "backend", "baseline", "subject", "ratio", "target", "verdict"]
        if key == "process":
            header[4:4] = ["median ratio"]
        if instr_on:
            header += ["instr base", "instr subj", "instr ratio", "verdict"]
        rows = [header]
        for c in configs:
            f = c["figures"][key]
            row = [IMPL_NAMES[c["implementation"]], c["backend"]]
            if "na" in f:
                rows.append([*row, "n/a: " + f["na"]] + [""] * (len(header) - 3))
                continue
            row += [fmt_time(f["baseline"], f["unit"]), fmt_time(f["subject"], f["unit"])]
            if key == "process":
                row += [f"{f['median_ratio']:.2f}x"]
            row += [f"{f['ratio']:.2f}x", fmt_target(f["target"]), f["verdict"] or ""]
            if instr_on:
                if "instr" in f:
                    i = f["instr"]
                    row += [
                        fmt_count(i["baseline"]),
                        fmt_count(i["subject"]),
                        f"{i['ratio']:.2f}x",
                        i["verdict"] or "",
                    ]
                else:
                    row += ["n/a: " + f.get("instr_na", "not counted"), "", "", ""]
            rows.append(row)
        out.append(columns(rows))
        if key == "process":
            out.append("   (min of the runs; median ratio beside it)")
            rows = [["implementation", "backend", "import + first use, in process: min", "median", "instr"]]
            for c in configs:
                f = c["figures"]["first_use"]
                row = [IMPL_NAMES[c["implementation"]], c["backend"]]
                if "na" in f:
                    rows.append([*row, "n/a: " + f["na"], "", ""])
                else:
                    instr = fmt_count(f["instr"]) if f.get("instr") else ""
                    rows.append([*row, f"{f['min_ms']:.2f} ms", f"{f['median_ms']:.2f} ms", instr])
            out.append(columns(rows))

    out.append(head("memory"))
    rows = [["implementation", "backend", "wipe-on-fork bytes", "VMAs", "one page each", "target", "verdict"]]
    for c in configs:
        f = c["figures"]["memory"]
        row = [IMPL_NAMES[c["implementation"]], c["backend"]]
        if "na" in f:
            rows.append([*row, "n/a: " + f["na"], "", "", "", ""])
        else:
            rows.append(
                [
                    *row,
                    f"{f['wf_bytes'] / KIB:.0f} KiB (before: {f['wf_bytes_before'] / KIB:.0f} KiB)",
                    f"{f['wf_vmas']} (before: {f['wf_vmas_before']})",
                    f"{f['baseline_bytes'] / MIB:.0f} MiB, {f['regions']:,} pages",
                    "<= 2 MiB, <= 64 VMAs",
                    f["verdict"],
                ]
            )
    out.append(columns(rows))

    out.append(head("fork_cost"))
    out.append(
        "   with N live ForkLocal instances, each with an attribute set in the parent; target: total <= 1 ms,"
        " O(1) in N\n   (hooks: the library's at-fork hooks, bracketed by our own; fork->child: perf_counter"
        " from before the fork to the child's first line)"
    )
    rows = [
        [
            "implementation",
            "backend",
            "route",
            "N",
            "fork->child",
            "hooks",
            "generation()",
            "read",
            "total",
            "verdict",
        ]
    ]
    for c in configs:
        f = c["figures"]["fork_cost"]
        row = [IMPL_NAMES[c["implementation"]], c["backend"]]
        if "na" in f:
            rows.append([*row, "n/a: " + f["na"], "", "", "", "", "", "", ""])
            continue
        for route in ("os.fork", "libc"):
            for r in f.get(route, []):
                if "na" in r:
                    rows.append([*row, ROUTES[route], f"{r['n']:,}", "n/a: " + r["na"], "", "", "", "", ""])
                    continue
                rows.append(
                    [
                        *row,
                        ROUTES[route],
                        f"{r['n']:,}",
                        fmt_ms(r["fork_return_ns"]),
                        fmt_ms(r["hooks_ns"]) if route == "os.fork" else "-",
                        fmt_ms(r["first_generation_ns"]),
                        fmt_ms(r["first_read_ns"]),
                        fmt_ms(r["total_ns"]),
                        r["verdict"],
                    ]
                )
            if route + ":growth" in f:
                rows.append(
                    [*row, ROUTES[route], "10^5/10^3", "", "", "", "", f"{f[route + ':growth']:.1f}x", ""]
                )
    out.append(columns(rows))

    out.append(head("touched"))
    rows = [["implementation", "backend", "route", "baseline", "subject", "ratio", "target", "verdict"]]
    for c in configs:
        f = c["figures"]["touched"]
        row = [IMPL_NAMES[c["implementation"]], c["backend"]]
        if "na" in f:
            rows.append([*row, "n/a: " + f["na"], "", "", "", "", ""])
            continue
        for route, e in f.items():
            if "na" in e:
                rows.append([*row, ROUTES[route], "n/a: " + e["na"], "", "", "", ""])
            else:
                rows.append(
                    [
                        *row,
                        ROUTES[route],
                        fmt_time(e["baseline"], "ns"),
                        fmt_time(e["subject"], "ns"),
                        f"{e['ratio']:.2f}x",
                        fmt_target(e["target"]),
                        e["verdict"] or "",
                    ]
                )
    out.append(columns(rows))

    out.append(head("vmclock"))
    vm_rows = [["implementation", "backend", "figure", "baseline", "subject", "ratio", "target", "verdict"]]
    for c in configs:
        f = c["figures"]["vmclock"]
        row = [IMPL_NAMES[c["implementation"]], c["backend"]]
        if "na" in f:
            vm_rows.append([*row, "n/a: " + f["na"], "", "", "", "", ""])
            continue
        for key in ("guard", "generation"):
            e = f[key]
            if "na" in e:
                vm_rows.append([*row, FIGURES[key][1], "n/a: " + e["na"], "", "", "", ""])
            else:
                vm_rows.append(
                    [
                        *row,
                        FIGURES[key][1],
                        fmt_time(e["baseline"], "ns"),
                        fmt_time(e["subject"], "ns"),
                        f"{e['ratio']:.2f}x",
                        fmt_target(e["target"]),
                        e["verdict"] or "",
                    ]
                )
    if all("na" in c["figures"]["vmclock"] for c in configs):
        out.append("   not measured (pass --vmclock PATH)")
    else:
        out.append(f"   with INHERIT_VMCLOCK={meta.get('vmclock')}")
        out.append(columns(vm_rows))
        for c in configs:
            f = c["figures"]["vmclock"]
            if "na" not in f:
                name = f"{IMPL_NAMES[c['implementation']]} / {c['backend']}"
                restore = json.dumps(f["restore"]) if f["restore"] else "no restore detection reported"
                out.append(f"   {name}: diagnostics(): {restore}")
    out.append(f"\nwall time of this run: {meta['elapsed_s']:.0f} s ({settings(meta)})")
    return "\n".join(out)


# ---------------------------------------------------------------- markdown


def md_ratio(f: dict[str, Any], with_times: bool = True) -> str:
    if "na" in f:
        return f"n/a: {f['na']}"
    cell = f"**{f['ratio']:.2f}x**"
    if with_times:
        cell += f" ({fmt_time(f['subject'], f['unit'])} vs {fmt_time(f['baseline'], f['unit'])})"
    if f["verdict"] == "MISSED":
        cell += " MISSED"
    if "instr" in f:
        cell += f"; instructions {f['instr']['ratio']:.2f}x"
        if not f["instr"].get("judged"):
            cell += " (system calls not counted)"
        if f["instr"]["verdict"] == "MISSED":
            cell += " MISSED"
    return cell


def md_target(key: str, backend: str) -> str:
    acc, pure = target_for(key, "accelerated", backend), target_for(key, "pure", backend)
    if acc == pure:
        return fmt_target(acc).replace("<= ", "")
    return f"{fmt_target(acc)} / {fmt_target(pure)}".replace("<= ", "")


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(run: dict[str, Any]) -> str:
    """docs/benchmarks.md's results: one table per backend, implementations side by side."""
    meta = run["meta"]
    configs = measured(run)
    by = {(c["implementation"], c["backend"]): c["figures"] for c in configs}
    impls = [i for i in IMPLEMENTATIONS if any(c["implementation"] == i for c in configs)]
    backends = [b for b in BACKENDS if any(c["backend"] == b for c in configs)]
    out = [
        f"{meta['implementation']} {meta['python']}, {meta['system']} {meta['release']} {meta['machine']}, "
        f"{meta['cpus']} CPUs; inherit {meta['inherit_version']}; {meta['date']}. "
        f"Implementations: {meta['implementations_note']}.",
        "",
        f"One run of `{meta.get('command', 'python benchmarks/run.py')}`: {settings(meta)}; method above.",
    ]
    for c in run["configs"]:
        if "skipped" in c:
            out += ["", f"Not measured: {IMPL_NAMES[c['implementation']]} on {c['backend']}: {c['skipped']}."]

    def fig(impl: str, backend: str, key: str) -> dict[str, Any]:
        return by.get((impl, backend), {}).get(key) or {"na": "not measured"}

    for backend in backends:
        out += ["", f"### {backend} backend", ""]
        header = ["#", "figure", "baseline", *(IMPL_NAMES[i] for i in impls), "target (accelerated / pure)"]
        rows = []
        for key in ("guard", "generation", "forklocal", "process", "first_use", "alloc", "random", "cache"):
            number, title, base, subject = FIGURES[key]
            cells = []
            for i in impls:
                f = fig(i, backend, key)
                if key == "first_use":
                    cells.append(md_na(f) or f"{f['min_ms']:.2f} ms (median {f['median_ms']:.2f} ms)")
                elif key == "process":
                    cells.append(md_ratio(f) + ("" if "na" in f else f"; median {f['median_ratio']:.2f}x"))
                else:
                    cells.append(md_ratio(f))
            target = "" if key == "first_use" else md_target(key, backend)
            rows.append([number, f"{title}: {subject}", base, *cells, target])
        cells = []
        base_cell = FIGURES["memory"][2]
        for i in impls:
            f = fig(i, backend, "memory")
            if "na" in f:
                cells.append(md_na(f))
                continue
            base_cell = f"one page each: {f['baseline_bytes'] / MIB:.0f} MiB"
            cells.append(
                f"{f['wf_bytes'] / KIB:.0f} KiB in {f['wf_vmas']} VMAs"
                + (" MISSED" if f["verdict"] == "MISSED" else "")
            )
        rows.append(["8", FIGURES["memory"][1], base_cell, *cells, "2 MiB, 64 VMAs"])
        for route in ("os.fork", "libc"):
            cells = []
            for i in impls:
                f = fig(i, backend, "touched")
                cells.append(md_ratio(f if "na" in f else f.get(route, {"na": "not measured"})))
            title = f"{FIGURES['touched'][1]}, {ROUTES[route]}"
            rows.append(["10", title, FIGURES["touched"][2], *cells, md_target("touched", backend)])
        out.append(md_table(header, rows))

        out += [
            "",
            f"9: first calls in a child with N live `ForkLocal` instances ({backend} backend): the library's "
            "at-fork hooks, the first `generation()` and the first attribute read of one instance; target at "
            "most 1 ms at N = 100,000, O(1) in N.",
            "",
        ]
        rows = []
        for route in ("os.fork", "libc"):
            for n_index, n in enumerate(FORK_SIZES):
                cells = []
                for i in impls:
                    f = fig(i, backend, "fork_cost")
                    rs = [] if "na" in f else [r for r in f.get(route, []) if r.get("n") == n]
                    if "na" in f or not rs or "na" in rs[0]:
                        cells.append(md_na(f) or md_na(rs[0] if rs else {"na": "not measured"}))
                        continue
                    r = rs[0]
                    parts = [
                        f"generation() {fmt_ms(r['first_generation_ns'])}",
                        f"read {fmt_ms(r['first_read_ns'])}",
                    ]
                    if route == "os.fork":
                        parts.insert(0, f"hooks {fmt_ms(r['hooks_ns'])}")
                    cell = f"**{fmt_ms(r['total_ns'])}** ({', '.join(parts)})"
                    cells.append(cell + (" MISSED" if r["verdict"] == "MISSED" else ""))
                rows.append([ROUTES[route] if n_index == 0 else "", f"{n:,}", *cells])
            cells = []
            for i in impls:
                growth = fig(i, backend, "fork_cost").get(route + ":growth")
                cells.append(f"{growth:.1f}x" if growth is not None else "")
            rows.append(["", "growth, 10^3 to 10^5", *cells])
        out.append(md_table(["route", "N", *(IMPL_NAMES[i] for i in impls)], rows))

    vm = [(c, c["figures"]["vmclock"]) for c in configs if "na" not in c["figures"]["vmclock"]]
    title = "`generation()` with VM-restore detection active"
    out += [
        "",
        f"{title}: not measured." if not vm else f"{title} (`INHERIT_VMCLOCK={meta.get('vmclock')}`):",
    ]
    if vm:
        rows = [
            [IMPL_NAMES[c["implementation"]], c["backend"], md_ratio(f["guard"]), md_ratio(f["generation"])]
            for c, f in vm
        ]
        out += [
            "",
            md_table(["implementation", "backend", FIGURES["guard"][1], FIGURES["generation"][1]], rows),
        ]
        if not any(f["restore"] for _, f in vm):
            out += ["", "`inherit.diagnostics()` reported no restore detection in these runs."]
    return "\n".join(out)


def settings(meta: dict[str, Any]) -> str:
    s = meta.get("settings")
    if not s:
        return "settings not recorded"
    text = (
        f"{s.get('rounds')} timeit rounds, {s.get('runs')} runs of each process, "
        f"{s.get('reps')} children per fork figure"
    )
    if meta.get("method_instr"):
        text += f", callgrind loops of N = {s.get('instr_n')}"
    load = meta.get("load")
    if load:
        text += f"; load average {load[0]:.1f} at the start, {load[1]:.1f} at the end"
    return text


def md_na(f: dict[str, Any]) -> str:
    return "n/a: " + f["na"] if "na" in f else ""


HEADLINE = {
    "guard": (
        "fork check in a method",
        "`if self.pid != os.getpid()`",
        "`if self.gen != inherit.generation()`",
    ),
    "forklocal": ("attribute of a fork-local object", "the getpid-guarded method", "`ForkLocal` attribute"),
    "alloc": ("allocate and close 32 bytes", "`bytearray(32)`", "`zero_on_fork(32).close()`"),
    "process": ("the whole process doing that", '`python -c "import os"`', "with inherit"),
}


def headline(run: dict[str, Any]) -> str:
    """The README's short table, from the same run: the default implementation on a kernel backend."""
    configs = measured(run)
    if not configs:
        return "(nothing measured)"
    order = {b: i for i, b in enumerate(BACKENDS)}
    c = min(configs, key=lambda c: (c["implementation"] != "accelerated", order[c["backend"]]))
    f = c["figures"]
    rows = []

    def time_row(key: str) -> None:
        label, base, subject = HEADLINE[key]
        e = f[key]
        if "na" in e:
            rows.append([label, base, md_na(e)])
            return
        rows.append(
            [
                label,
                f"{base}: {fmt_time(e['baseline'], e['unit'])}",
                f"{subject}: {fmt_time(e['subject'], e['unit'])} ({e['ratio']:.2f}x)",
            ]
        )

    time_row("guard")
    time_row("forklocal")
    time_row("alloc")
    fu = f["first_use"]
    rows.append(
        [
            "`import inherit` + first region + `generation()`",
            "",
            md_na(fu) or f"{fu['min_ms']:.1f} ms in process",
        ]
    )
    time_row("process")
    m = f["memory"]
    if "na" not in m:
        rows.append(
            [
                "10,000 regions of 32 bytes",
                f"one page each: {m['baseline_bytes'] / MIB:.0f} MiB",
                f"{m['wf_bytes'] / KIB:.0f} KiB of wipe-on-fork memory",
            ]
        )
    fc = f["fork_cost"]
    big = (
        []
        if "na" in fc
        else [r for r in fc.get("libc", []) if r.get("n") == FORK_SIZES[-1] and "na" not in r]
    )
    if big:
        rows.append(
            [
                "first calls in a child made by C `fork()`, 100,000 live `ForkLocal`s",
                "",
                f"{fmt_ms(big[0]['total_ns'])}",
            ]
        )
    meta = run["meta"]
    title = (
        f"Measured on {meta['implementation']} {meta['python']}, {meta['system']} {meta['release']} "
        f"{meta['machine']} ({meta['cpus']} CPUs), {c['backend']} backend, "
        f"{IMPL_NAMES[c['implementation']]}, each figure beside today's idiom in the same run "
        "(`python benchmarks/run.py`):"
    )
    return title + "\n\n" + md_table(["figure", "baseline", "inherit"], rows)


# ---------------------------------------------------------------- main


def machine(impls_note: str) -> dict[str, Any]:
    code = (
        "import json, sys, inherit; print(json.dumps([inherit.__file__, getattr(inherit, '__version__', '?'),"
        " sorted(m for m in sys.modules if m.startswith('__editable__'))]))"
    )
    proc = run_py(["-c", code], base_env())
    path, version, editable = json.loads(last_line(proc.stdout)) if proc.returncode == 0 else ("?", "?", [])
    note = None
    if editable:
        note = (
            f"an editable install's import hook ({editable[0]}) loads at every interpreter start, "
            "in the baseline too, and preloads modules inherit would import: figure 4 does not show what "
            "users see; publish numbers from a regular install"
        )
    elif "site-packages" not in path and "dist-packages" not in path:
        note = f"inherit is imported from {os.path.dirname(path)}, not from site-packages"
    return {
        "inherit_path": os.path.dirname(path),
        "inherit_version": version,
        "install_note": note,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "date": datetime.date.today().isoformat(),
        "implementations_note": impls_note,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds and runs")
    parser.add_argument("--instructions", action="store_true", help="also count instructions with callgrind")
    parser.add_argument("--json", metavar="PATH", help="write every number as JSON")
    parser.add_argument(
        "--markdown", action="store_true", help="also print the docs/benchmarks.md and README tables"
    )
    parser.add_argument("--render", metavar="PATH", help="print a run saved with --json instead of measuring")
    parser.add_argument(
        "--vmclock", metavar="PATH", help="also measure figures 1-2 with INHERIT_VMCLOCK=PATH"
    )
    parser.add_argument(
        "--backend", action="append", choices=BACKENDS, help="backend(s) to measure (default: all)"
    )
    args = parser.parse_args()

    if args.render:
        with open(args.render) as f:
            run = json.load(f)
        for config in run["configs"]:
            if "worker" in config:
                config["figures"] = evaluate(config)  # with today's targets
    else:
        start = time.monotonic()
        args.rounds, args.runs, args.reps, args.instr_n = (
            (40, 15, 3, 1000) if args.quick else (150, 41, 7, 5000)
        )
        accelerated, why = accelerator_state()
        impls = ["accelerated", "pure"] if accelerated else ["pure"]
        note = "accelerated and pure Python" if accelerated else f"pure Python only ({why})"
        meta = machine(note)
        meta["vmclock"] = args.vmclock
        shown = [
            a for i, a in enumerate(sys.argv[1:]) if a != "--json" and (i == 0 or sys.argv[i] != "--json")
        ]
        meta["command"] = " ".join(["python", "benchmarks/run.py", *shown])
        meta["settings"] = {
            "rounds": args.rounds,
            "runs": args.runs,
            "reps": args.reps,
            "instr_n": args.instr_n,
        }
        load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        meta["method"] = METHOD.format(rounds=args.rounds, runs=args.runs, reps=args.reps)
        if args.instructions:
            meta["method_instr"] = METHOD_INSTR.format(n=args.instr_n)
            meta["valgrind"] = valgrind_missing() or last_line(
                subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout
            )
        configs = []
        for impl in impls:
            for backend in args.backend or BACKENDS:
                print(f"measuring {IMPL_NAMES[impl]} on {backend} ...", file=sys.stderr, flush=True)
                config = run_config(impl, backend, args)
                if "worker" in config:
                    config["figures"] = evaluate(config)
                configs.append(config)
        meta["elapsed_s"] = time.monotonic() - start
        if load_start is not None:
            meta["load"] = [load_start, os.getloadavg()[0]]
        run = {"meta": meta, "targets": TARGETS, "configs": configs}
    print(text_report(run))
    if args.markdown:
        print("\n---- markdown: docs/benchmarks.md, Results ----\n")
        print(markdown(run))
        print("\n---- markdown: README.md, Speed ----\n")
        print(headline(run))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(run, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
