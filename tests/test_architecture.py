"""The shape the code promises in docs/architecture.md, checked on the source itself."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

import inherit
import inherit.backends as backends
from inherit import _runtime
from support import run_python

PACKAGE = Path(inherit.__file__).resolve().parent
BACKENDS = Path(backends.__file__).resolve().parent
DOCS = Path(__file__).resolve().parent.parent / "docs" / "architecture.md"
LIBRARY = sorted(PACKAGE.glob("*.py")) + sorted(BACKENDS.glob("*.py"))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def test_one_at_fork_registration_in_the_runtime() -> None:
    calls = [
        (path.name, node.lineno)
        for path in LIBRARY
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.Attribute) and node.attr == "register_at_fork"
    ]
    assert [name for name, _ in calls] == ["_runtime.py"], calls


def test_backends_import_only_downward() -> None:
    allowed_parent = {"_errors", "_native"}
    for path in sorted(BACKENDS.glob("*.py")):
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom) and node.level == 2:
                assert node.module in allowed_parent, f"{path.name} imports inherit.{node.module}"
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                assert not node.module.startswith("inherit"), f"{path.name} imports {node.module}"


def test_no_module_reads_another_modules_private_names() -> None:
    modules = {p.stem for p in LIBRARY} | {"_speedups"}  # the compiled accelerator is a module too
    problems = []
    for path in LIBRARY:
        tree = _tree(path)
        aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            absolute = isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "inherit"
            if isinstance(node, ast.ImportFrom) and (node.level or absolute):
                for alias in node.names:
                    if alias.name in modules:
                        aliases[alias.asname or alias.name] = alias.name
                    elif alias.name.startswith("_") and not alias.name.startswith("__"):
                        if (node.module or "").lstrip(".") != "_native":  # the generated module's ffi
                            problems.append(f"{path.name}: from .{node.module} import {alias.name}")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                problems.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not problems, problems


def test_one_table_drives_the_names_construction_and_candidates() -> None:
    assert backends.NAMES == tuple(row[0] for row in backends.TABLE)
    assert backends.NAMES[-1] == "getpid" and backends.TABLE[-1][1] == ()
    for name, platforms, _, _ in backends.TABLE:
        assert backends.make(name).name == name
        for platform in platforms:
            assert name in backends.candidates(platform + "42")
    with pytest.raises(ValueError, match="unknown backend"):
        backends.make("nonesuch")


def test_a_new_backend_is_one_module_and_one_row() -> None:
    """A backend module and a table row, nothing else: INHERIT_BACKEND, selection and diagnostics see it."""
    code = r"""
import json, sys, types
import inherit.backends as backends
from inherit.backends.getpid import GetpidBackend

class EchoBackend(GetpidBackend):
    name = "echo"

module = types.ModuleType("inherit.backends.echo")
module.EchoBackend = EchoBackend
sys.modules["inherit.backends.echo"] = module
backends.TABLE = (("echo", ("linux",), "echo", "EchoBackend"),) + backends.TABLE
import inherit
print(json.dumps({"backend": inherit.backend(), "candidates": inherit.diagnostics()["candidates"]}))
"""
    proc = run_python(code, env={"INHERIT_BACKEND": "echo"})
    assert proc.returncode == 0, proc.stderr
    assert '"backend": "echo"' in proc.stdout and '"echo"' in proc.stdout


def test_the_core_never_asks_which_platform_it_is_on() -> None:
    for name in ("__init__.py", "_runtime.py", "_region.py"):
        text = (PACKAGE / name).read_text()
        assert not re.search(r"sys\.platform\s*(==|!=|\.startswith)|os\.name\s*(==|!=)", text), name


def test_the_architecture_page_lists_the_steps_in_order() -> None:
    page = DOCS.read_text()
    steps = re.findall(r"^   \d\. \*\*(.+?)\*\*", page, re.M)
    assert steps[1:] == list(_runtime.STEP_ORDER), steps
    assert steps[0].startswith("draw a fresh generation")
    assert [step.__name__ for step in _runtime._steps] == [
        "_wipe_lazily_wiped_memory",
        "_wipe_on_restore",
        "_reset_books",
        "_reset_renewal_books",
    ]


def test_import_loads_nothing_heavy() -> None:
    proc = run_python(
        "import sys; before = set(sys.modules); import inherit; print(sorted(set(sys.modules) - before))"
    )
    loaded = proc.stdout.strip()
    for heavy in (
        "cffi",
        "_cffi_backend",
        "'random'",
        "functools",
        "subprocess",
        "inherit.backends",
        "threading",
    ):
        assert heavy not in loaded, loaded


@pytest.mark.skipif(sys.version_info < (3, 11), reason="specialization of LOAD_ATTR appeared in 3.11")
def test_the_package_has_no_module_getattr() -> None:
    """A module __getattr__ stops CPython specializing ``inherit.generation`` at every call site."""
    assert "__getattr__" not in vars(inherit)
