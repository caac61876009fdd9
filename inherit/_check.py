"""``python -m inherit check``: a live self-test over every fork route available here.

Diagnostics say which backend was chosen; this shows it working. For each
route the parent fills two zero-on-fork regions (a small one on the shared
slab, a large one with its own mapping), forks by that route, and the child
reports what it reads. Nothing here is mocked: a leak shows as ``no``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_SMALL = 64
_LARGE = 3 * 4096 + 100  # larger than a slab slot: a mapping of its own


def _pattern(size: int) -> bytes:
    """Non-zero bytes, so a single surviving byte is visible."""
    return bytes((i % 255) + 1 for i in range(size))


@dataclass(frozen=True)
class RouteResult:
    """What a child made by one route saw. ``None`` means the child gave no answer.

    ``kernel_wipes`` says whether the backend relies on the kernel: then a
    view taken before the fork must read zeros too, and one that does not is
    a leak rather than the getpid backend's documented blind spot.
    """

    route: str
    zeroed: bool | None = None
    generation_moved: bool | None = None
    parent_kept: bool | None = None
    old_view_zeroed: bool | None = None
    error: str | None = None
    kernel_wipes: bool = False

    @property
    def view_leaked(self) -> bool:
        """An old view showed the parent's bytes although the kernel should have wiped them."""
        return self.kernel_wipes and self.old_view_zeroed is False

    @property
    def ok(self) -> bool:
        """Zeroed, a new generation, the parent's bytes intact, no error, and no leak through a view."""
        return (
            self.error is None
            and bool(self.zeroed and self.generation_moved and self.parent_kept)
            and not self.view_leaked
        )

    def as_dict(self) -> dict[str, Any]:
        """The stable keys of one row of ``check --json``."""
        return {
            "route": self.route,
            "zeroed": self.zeroed,
            "generation_moved": self.generation_moved,
            "parent_kept": self.parent_kept,
            "old_view_zeroed": self.old_view_zeroed,
            "error": self.error,
            "ok": self.ok,
        }


@dataclass(frozen=True)
class CheckReport:
    backend: str | None
    kernel_wipes: bool | None
    routes: list[RouteResult] = field(default_factory=list)
    error: str | None = None
    unavailable: dict[str, str] = field(default_factory=dict)  # route -> why it cannot run here

    @property
    def ok(self) -> bool:
        return self.error is None and all(r.ok for r in self.routes)

    def as_dict(self) -> dict[str, Any]:
        """Stable, JSON-ready keys (what ``check --json`` prints)."""
        return {
            "backend": self.backend,
            "kernel_wipes": self.kernel_wipes,
            "ok": self.ok,
            "error": self.error,
            "routes": [r.as_dict() for r in self.routes],
        }


def _in_child(regions: list[Any], views: list[memoryview], parent_generation: int) -> tuple[bool, bool, bool]:
    """Runs in the child. Reads the old views first: nothing may wipe on their behalf."""
    import inherit

    old_view_zeroed = all(not any(v) for v in views)
    zeroed = all(bytes(r) == bytes(len(r)) for r in regions)
    moved = inherit.generation() != parent_generation
    return zeroed, moved, old_view_zeroed


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip().rstrip(":")


def check_route(route: str, timeout: float = 30.0, kernel_wipes: bool = False) -> RouteResult:
    """Fill regions, fork by ``route``, and report what the child saw; never raises an Exception."""
    import inherit
    from inherit.testing import run_in_child

    regions: list[Any] = []
    views: list[memoryview] = []
    try:
        for size in (_SMALL, _LARGE):
            regions.append(inherit.zero_on_fork(size))
            regions[-1][:] = _pattern(size)
        views = [r.view() for r in regions]
        before = inherit.generation()
        zeroed, moved, view_zeroed = run_in_child(
            _in_child, regions, views, before, route=route, timeout=timeout
        )
        kept = all(bytes(r) == _pattern(len(r)) for r in regions) and inherit.generation() == before
        return RouteResult(route, zeroed, moved, kept, view_zeroed, kernel_wipes=kernel_wipes)
    except Exception as exc:  # any failure of one route is that route's result; the others still run
        return RouteResult(route, error=_describe(exc), kernel_wipes=kernel_wipes)
    finally:
        for view in views:
            view.release()
        for region in regions:
            region.close()


def run_check(routes: list[str] | None = None, timeout: float = 30.0) -> CheckReport:
    """Check every route in ``routes`` (default: all available here)."""
    import inherit
    from inherit import testing

    try:
        name = inherit.backend()
        kernel_wipes = bool(inherit.diagnostics()["kernel_wipes"])
    except Exception as exc:  # an invalid or unavailable INHERIT_BACKEND, say
        return CheckReport(None, None, error=str(exc) or type(exc).__name__)
    try:
        offered = testing.available_routes()
        unavailable = (
            {}
            if routes is not None
            else {
                r: testing.unavailable_reason(r) or "not offered here"
                for r in testing.ROUTES
                if r not in offered
            }
        )
    except Exception as exc:
        return CheckReport(name, kernel_wipes, error=f"cannot list the fork routes: {_describe(exc)}")
    chosen = offered if routes is None else routes
    results = [check_route(route, timeout, kernel_wipes) for route in chosen]
    return CheckReport(name, kernel_wipes, results, unavailable=unavailable)


def _yes(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def format_table(report: CheckReport) -> str:
    """The human-readable table ``python -m inherit check`` prints."""
    if report.error is not None:
        return f"inherit self-check: cannot run: {report.error}"
    how = "the kernel wipes" if report.kernel_wipes else "the library wipes on access"
    lines = [f"inherit self-check: backend {report.backend} ({how}), {len(report.routes)} route(s)", ""]
    if not report.routes:
        lines.append("no fork on this platform: no child can inherit anything")
        return "\n".join(lines)
    header = ("route", "zeroed", "generation moved", "parent kept", "old view zeroed")
    rows = [
        (r.route, _yes(r.zeroed), _yes(r.generation_moved), _yes(r.parent_kept), _yes(r.old_view_zeroed))
        for r in report.routes
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    lines.append("")
    for r in report.routes:
        if r.error is not None:
            lines.append(f"{r.route}: {r.error}")
    for route, why in report.unavailable.items():
        lines.append(f"{route}: not available here ({why})")
    if report.ok:
        lines.append("ok: every child read zeros through the Region API and saw a new generation")
    elif not all(
        r.error is None and r.zeroed and r.generation_moved and r.parent_kept for r in report.routes
    ):
        lines.append("FAILED: a child read the parent's bytes, missed the fork, or gave no answer")
    if any(r.view_leaked for r in report.routes):
        lines.append(
            f"FAILED: 'old view zeroed: no' is a leak under the {report.backend} backend. The kernel is\n"
            "meant to wipe this memory at the fork, so a child must read zeros even through a memoryview\n"
            "(or a C pointer) taken before it, and one read the parent's bytes: the kernel accepted the\n"
            "mark but did not wipe. Suspect an emulator or a sandbox (see the backends page)."
        )
    elif any(r.old_view_zeroed is False for r in report.routes):
        lines.append(
            "note: 'old view zeroed' is informational. A memoryview taken before the fork showed the\n"
            "parent's bytes in a child whose route skips Python's at-fork hooks; the getpid backend\n"
            "cannot see such forks until the Region API is used (see the security page)."
        )
    return "\n".join(lines)
