"""The README's example runs as written (in a fresh interpreter, with real forks)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from support import run_python

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    if not README.exists():
        pytest.skip("README.md is not beside the tests")
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_example_runs() -> None:
    example = python_blocks()[0]
    out = run_python(example + "\nprint('done')\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "done"
