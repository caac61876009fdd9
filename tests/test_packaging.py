"""The distribution users install: its metadata, its one version, its sdist and wheel.

The fast tests read the installed metadata and the files beside the tests. The slow ones
(``tox -e packaging``, which sets INHERIT_TEST_PACKAGING=1) build the sdist and the wheel from a
clean copy of the source tree, check them with twine, install each in a fresh virtual environment
and run the test suite from the unpacked sdist.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import inherit

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
PYTHONS = ("3.10", "3.11", "3.12", "3.13", "3.14", "3.15")
URLS = {"Homepage", "Documentation", "Source", "Issues", "Changelog"}
# Files of the checkout that the sdist leaves out on purpose: CI and editor configuration.
NOT_IN_SDIST = re.compile(r"^(\.ci/|\.github/|\.gitignore$)")
SLOW = os.environ.get("INHERIT_TEST_PACKAGING") == "1"
slow = pytest.mark.skipif(not SLOW, reason="builds and installs: run with tox -e packaging")


def release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def pyproject() -> dict[str, object]:
    if not PYPROJECT.is_file():
        pytest.skip("pyproject.toml is not beside the tests")
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pytest depends on tomli before 3.11
        import tomli as tomllib
    with PYPROJECT.open("rb") as f:
        return tomllib.load(f)


def installed() -> importlib.metadata.PackageMetadata:
    try:
        return importlib.metadata.metadata("pyinherit")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("inherit is not installed as the pyinherit distribution here")


def source_files() -> list[str]:
    """What a clone would hold: tracked files plus new ones that .gitignore does not exclude."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    out = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return sorted({name for name in out.split("\0") if name and (ROOT / name).is_file()})


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without what would make a nested build or test run something else."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("INHERIT_TEST_", "PYTHON", "VIRTUAL_ENV", "TOX_")) and k != "INHERIT_BACKEND"
    }
    env.update(extra)
    return env


def run(
    args: list[str | Path], *, cwd: Path, timeout: float = 600, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def make_venv(path: Path) -> Path:
    """A fresh virtual environment from this interpreter; its python."""
    result = run([sys.executable, "-m", "venv", path], cwd=path.parent, timeout=300)
    if result.returncode != 0 and "ensurepip" in result.stdout + result.stderr:
        pytest.skip("venv cannot install pip here (Debian and Ubuntu: install python3-venv)")
    assert result.returncode == 0, result.stdout + result.stderr
    return path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


# -- the installed metadata -------------------------------------------------------------------------


def test_installed_distribution_is_pyinherit_at_the_package_version() -> None:
    meta = installed()
    assert meta["Name"] == "pyinherit"
    assert meta["Version"] == inherit.__version__
    assert meta["License-Expression"] == "MIT"
    assert meta["Requires-Python"] == ">=3.10"
    assert meta["Author"] == "the inherit contributors"
    assert meta["Keywords"] and "fork" in meta["Keywords"].split(",")


def test_installed_metadata_has_the_anchors_urls_and_classifiers() -> None:
    meta = installed()
    urls = dict(entry.split(", ", 1) for entry in meta.get_all("Project-URL") or [])
    assert set(urls) == URLS
    assert urls["Source"] == "https://github.com/pyinherit/pyinherit"
    assert urls["Issues"] == "https://github.com/pyinherit/pyinherit/issues"
    assert urls["Changelog"] == "https://github.com/pyinherit/pyinherit/blob/main/CHANGELOG.md"
    assert urls["Documentation"] == urls["Homepage"] == "https://pyinherit.readthedocs.io"
    classifiers = set(meta.get_all("Classifier") or [])
    assert {f"Programming Language :: Python :: {v}" for v in PYTHONS} <= classifiers
    assert "Programming Language :: Python :: Implementation :: CPython" in classifiers
    assert "Development Status :: 3 - Alpha" in classifiers
    # PEP 639: the license is the expression alone, never also a classifier.
    assert not any(c.startswith("License ::") for c in classifiers)


def test_classifiers_are_known_to_pypi() -> None:
    trove = pytest.importorskip("trove_classifiers", reason="trove-classifiers (tox -e packaging has it)")
    unknown = set(installed().get_all("Classifier") or []) - set(trove.classifiers)
    assert not unknown, f"PyPI rejects unknown classifiers: {sorted(unknown)}"


# -- the source of the build ------------------------------------------------------------------------


def test_the_version_has_one_source() -> None:
    config = pyproject()
    project = config["project"]
    assert isinstance(project, dict)
    assert "version" not in project and "version" in project["dynamic"]
    tool = config["tool"]
    assert isinstance(tool, dict)
    assert tool["setuptools"]["dynamic"]["version"] == {"attr": "inherit.__version__"}
    # setuptools reads the literal without importing the package, so it must stay a literal.
    literals = re.findall(r'^__version__ = "([^"]+)"$', (ROOT / "inherit" / "__init__.py").read_text(), re.M)
    assert literals == [inherit.__version__]


def test_build_requires_the_setuptools_that_reads_pep_639() -> None:
    config = pyproject()
    build = config["build-system"]
    assert isinstance(build, dict)
    assert build["requires"] == ["setuptools>=77.0.3"]
    backend = (ROOT / "_build" / "pyinherit_build.py").read_text()
    assert "MINIMUM = (77, 0, 3)" in backend


def test_tox_lists_current_and_free_threaded_pythons() -> None:
    if not (ROOT / "tox.ini").is_file():
        pytest.skip("tox.ini is not beside the tests")
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    envlist = [e.strip() for e in ini["tox"]["envlist"].split(",")]
    pythons = [e for e in envlist if e.startswith("py") and not e.endswith("-pure")]
    assert pythons == [f"py3{v.split('.')[1]}" for v in PYTHONS] + ["py314t"]
    # the pure-Python reference runs on the oldest and newest Python installed here at least
    pure = [e.removesuffix("-pure") for e in envlist if e.startswith("py") and e.endswith("-pure")]
    assert pure and set(pure) <= set(pythons), pure
    assert {"py310", "py313"} <= set(pure) and "getpid-pure" in envlist
    assert ini["tox"]["skip_missing_interpreters"] == "true"


def test_changelog_has_this_version_and_the_docs_show_it() -> None:
    changelog = ROOT / "CHANGELOG.md"
    if not changelog.is_file():
        pytest.skip("CHANGELOG.md is not beside the tests")
    text = changelog.read_text()
    versions = re.findall(r"^## \[([^\]]+)\]", text, re.M)
    assert versions[0] == inherit.__version__ and "0.1.0" in versions
    for version in versions:  # every section links to its diff or release
        assert re.search(rf"^\[{re.escape(version)}\]: https://github.com/pyinherit/pyinherit/", text, re.M)
    assert "```{include} ../CHANGELOG.md" in (ROOT / "docs" / "changelog.md").read_text()


def test_manifest_takes_every_top_level_entry_of_a_clone() -> None:
    """A quick check that needs no build; the slow test below compares a real sdist file by file."""
    manifest = (ROOT / "MANIFEST.in").read_text()
    taken = set()
    for line in manifest.splitlines():
        words = line.split()
        if words and words[0] in ("include", "graft"):
            taken.update(word.split("/")[0] for word in words[1:])
    taken |= {"pyproject.toml", "MANIFEST.in"}  # always in an sdist
    tops = {name.split("/")[0] for name in source_files() if not NOT_IN_SDIST.match(name)}
    assert tops <= taken, f"MANIFEST.in misses {sorted(tops - taken)}"


def test_build_without_isolation_on_an_old_setuptools_says_why(tmp_path: Path) -> None:
    """Debian 12's setuptools 66, or the 65 that venv installs on 3.10 and 3.11, or none (3.12+)."""
    if not PYPROJECT.is_file():
        pytest.skip("pyproject.toml is not beside the tests")
    python = make_venv(tmp_path / "venv")
    probe = run([python, "-c", "import setuptools; print(setuptools.__version__)"], cwd=tmp_path)
    version = probe.stdout.strip() if probe.returncode == 0 else None
    if version is not None and release(version) >= (77, 0, 3):
        pytest.skip(f"venv installs setuptools {version} here: nothing old to refuse")
    # Nothing is built: the backend refuses before setuptools reads pyproject.toml.
    result = run(
        [python, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index", ROOT],
        cwd=tmp_path,
        timeout=300,
    )
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "building pyinherit needs setuptools>=77.0.3" in out, out
    assert (f"this environment has setuptools {version}." if version else "has no setuptools") in out, out
    assert "--no-build-isolation" in out and "project.license" not in out, out


# -- built, installed and tested (tox -e packaging) -------------------------------------------------


@pytest.fixture(scope="module")
def artifacts() -> Iterator[tuple[Path, Path]]:
    """(sdist, wheel) built by `python -m build` from a clean copy of the tree, as release.yml does."""
    files = source_files()
    with tempfile.TemporaryDirectory(prefix="inherit-dist-") as tmp:
        copy = Path(tmp) / "src"
        for name in files:
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
        out = Path(tmp) / "dist"
        result = run(
            [sys.executable, "-m", "build", "--outdir", out, copy], cwd=Path(tmp), INHERIT_BUILD_EXTENSION="0"
        )
        assert result.returncode == 0, result.stdout + result.stderr
        # "Clean": nothing the build had to warn about.
        assert "warning" not in result.stdout.lower() + result.stderr.lower(), result.stdout + result.stderr
        (sdist,) = out.glob("*.tar.gz")
        (wheel,) = out.glob("*.whl")
        yield sdist, wheel


@slow
def test_twine_check_is_clean(artifacts: tuple[Path, Path]) -> None:
    result = run([sys.executable, "-m", "twine", "check", "--strict", *artifacts], cwd=artifacts[0].parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2, result.stdout


@slow
def test_artifacts_are_named_for_the_distribution(artifacts: tuple[Path, Path]) -> None:
    sdist, wheel = artifacts
    assert sdist.name == f"pyinherit-{inherit.__version__}.tar.gz"
    assert wheel.name == f"pyinherit-{inherit.__version__}-py3-none-any.whl"  # INHERIT_BUILD_EXTENSION=0


@slow
def test_sdist_holds_every_file_of_a_clone(artifacts: tuple[Path, Path]) -> None:
    sdist = artifacts[0]
    prefix = f"pyinherit-{inherit.__version__}/"
    with tarfile.open(sdist) as tar:
        members = {m.name.removeprefix(prefix) for m in tar.getmembers() if m.isfile()}
    expected = {name for name in source_files() if not NOT_IN_SDIST.match(name)}
    assert expected - members == set(), "missing from the sdist"
    generated = {"PKG-INFO", "setup.cfg"}
    extra = {m for m in members - expected if m not in generated and not m.startswith("pyinherit.egg-info/")}
    assert extra == set(), "in the sdist but not in a clone"
    for needed in ("tests/conftest.py", "tests/support.py", "tests/faultshim.py", "tox.ini", "LICENSE"):
        assert needed in members


@slow
def test_installed_wheel_is_pyinherit_and_reports_its_version(
    artifacts: tuple[Path, Path], tmp_path: Path
) -> None:
    python = make_venv(tmp_path / "venv")
    result = run([python, "-m", "pip", "install", artifacts[1]], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    meta = run(
        [
            python,
            "-c",
            "import importlib.metadata as m; d = m.distribution('pyinherit'); print(d.name, d.version)",
        ],
        cwd=tmp_path,
    )
    assert meta.stdout.split() == ["pyinherit", inherit.__version__], meta.stderr
    version = run([python, "-m", "inherit", "--version"], cwd=tmp_path)
    expected = (0, f"pyinherit {inherit.__version__}\n", "")
    assert (version.returncode, version.stdout, version.stderr) == expected
    assert run([python, "-m", "pip", "show", "inherit"], cwd=tmp_path).returncode != 0  # no second name


@slow
def test_unpacked_sdist_installs_and_passes_its_tests(artifacts: tuple[Path, Path], tmp_path: Path) -> None:
    with tarfile.open(artifacts[0]) as tar:
        if sys.version_info >= (3, 12):
            tar.extractall(tmp_path, filter="data")
        else:
            tar.extractall(tmp_path)  # our own archive; 3.12+ filters it
    unpacked = tmp_path / f"pyinherit-{inherit.__version__}"
    python = make_venv(tmp_path / "venv")
    result = run([python, "-m", "pip", "install", f"{unpacked}[test]"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # From outside the tree, so the installed package is what gets tested; a private verdict cache.
    cache = tmp_path / "cache"
    suite = run(
        [python, "-m", "pytest", unpacked / "tests", "-p", "no:cacheprovider", "-q"],
        cwd=tmp_path,
        timeout=1800,
        XDG_CACHE_HOME=str(cache),
    )
    tail = "\n".join((suite.stdout + suite.stderr).splitlines()[-30:])
    assert suite.returncode == 0, tail
    assert re.search(r"\d+ passed", suite.stdout), tail
