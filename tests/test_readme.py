"""The README: its example runs, its links work on PyPI, and its set-up commands work as written.

The set-up commands are run for real by ``tox -e readme`` (INHERIT_TEST_README=1): in a clean
copy of the checkout, with Debian's or Ubuntu's own /usr/bin/python3 first on PATH, where
PEP 668 makes ``python3 -m pip install .`` fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import inherit
from support import run_python

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = "https://pyinherit.readthedocs.io/en/stable/"
SYSTEM_PYTHON = Path("/usr/bin/python3")


def readme() -> str:
    if not README.exists():
        pytest.skip("README.md is not beside the tests")
    return README.read_text(encoding="utf-8")


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", readme(), flags=re.S)


def sections() -> dict[str, str]:
    """The README's level-2 sections by heading."""
    parts = re.split(r"^## (.+)$", readme(), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def setup_commands() -> list[str]:
    """The two lines of the first ```sh block under "Try it from a checkout"."""
    block = re.search(r"```sh\n(.*?)```", sections()["Try it from a checkout"], flags=re.S)
    assert block is not None
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_example_runs() -> None:
    example = python_blocks()[0]
    out = run_python(example + "\nprint('done')\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "done"


def test_links_are_absolute_so_they_work_on_pypi() -> None:
    # "Speed" is rewritten from each benchmark run (benchmarks/run.py), link included, so it is
    # left out here until that text links to the docs site too.
    text = "".join(body for heading, body in sections().items() if heading != "Speed")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        assert link.startswith("https://"), f"relative link {link!r} does not resolve on PyPI"
        if link.startswith(DOCS):
            page = link.removeprefix(DOCS).split("#")[0].removesuffix(".html")
            assert (ROOT / "docs" / f"{page}.md").is_file(), f"{link}: no docs/{page}.md"


def test_install_names_the_distribution() -> None:
    text = readme()
    assert "pip install pyinherit" in text
    assert "PyYAML" in text  # the one line on why the names differ


def test_setup_commands_install_into_a_virtual_environment() -> None:
    commands = setup_commands()
    assert len(commands) == 2
    for command in commands:
        assert command.startswith("python3 -m venv .venv && ")
        # Every pip and tool call goes through the environment's Python, never the system's.
        for step in command.split("#")[0].split("&&")[1:]:
            assert re.match(r"\.venv/bin/python (-I )?-m ", step.strip()), step
    assert "-m inherit" in commands[0] and "-m tox" in commands[1]


def source_files() -> list[str]:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout: the README's commands are for a clone")
    out = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return sorted({name for name in out.split("\0") if name and (ROOT / name).is_file()})


@pytest.mark.skipif(os.environ.get("INHERIT_TEST_README") != "1", reason="slow: run with tox -e readme")
def test_setup_commands_work_as_written_on_the_system_python(tmp_path: Path) -> None:
    if not SYSTEM_PYTHON.is_file():
        pytest.skip("no /usr/bin/python3 here")
    clone = tmp_path / "pyinherit"
    for name in source_files():
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, clone / name)
    # A stock shell: the system's Python first on PATH, no virtualenv, no tox or pip settings.
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    assert shutil.which("python3", path=env["PATH"]) == str(SYSTEM_PYTHON)

    def sh(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/sh", "-c", command],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=3600,
            stdin=subprocess.DEVNULL,
        )

    stdlib = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    if (Path(stdlib) / "EXTERNALLY-MANAGED").is_file():
        # The premise: what the README used to say fails here.
        naive = sh("python3 -m pip install .")
        assert naive.returncode != 0 and "externally-managed-environment" in naive.stdout + naive.stderr

    install, test = setup_commands()
    first = sh(install)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert f"inherit {inherit.__version__}: backend " in first.stdout, first.stdout
    second = sh(test)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-5000:]
    assert "congratulations" in out, out[-5000:]
    assert re.search(r"^\s*py3\d+: OK", out, re.M), out[-5000:]  # a suite ran, not only skips
