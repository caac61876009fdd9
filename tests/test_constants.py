"""The numbers the backends pass to the kernel, checked against the system headers and the docs.

A wrong constant fails silently on some systems (NetBSD's 3 means DONATE_COPY, not
ZERO), so the values are compared with ``<sys/mman.h>`` wherever a C compiler can
read it, with the platform table in ``docs/platforms.md``, and the generated cffi
module is compared with what its generator would write now.
"""

from __future__ import annotations

import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

from inherit.backends import madvise, minherit
from support import build_program

ROOT = Path(__file__).resolve().parent.parent
DOCS_PAGE = ROOT / "docs" / "platforms.md"
GENERATOR = ROOT / "tools" / "gen_native.py"

NAMES = (
    "MADV_WIPEONFORK",
    "MADV_KEEPONFORK",
    "MAP_INHERIT_ZERO",
    "MAP_INHERIT_COPY",
    "MAP_INHERIT_DONATE_COPY",
    "INHERIT_ZERO",
    "INHERIT_COPY",
    "MC_INHERIT_ZERO",
)
PROGRAM = (
    "#include <stdio.h>\n#include <sys/types.h>\n#include <sys/mman.h>\nint main(void) {\n"
    + "".join(f'#ifdef {n}\n    printf("{n} %d\\n", (int)({n}));\n#endif\n' for n in NAMES)
    + "    return 0;\n}\n"
)


@pytest.fixture(scope="module")
def header() -> dict[str, int]:
    """The constants <sys/mman.h> defines here (skip without a compiler or the header)."""
    try:
        program = build_program(PROGRAM, "inherit-mman-constants")
    except RuntimeError as exc:
        if "mman.h" in str(exc):
            pytest.skip("no <sys/mman.h> on this system")
        raise
    out = subprocess.run([str(program)], capture_output=True, text=True, check=True).stdout
    return {name: int(value) for name, value in (line.split() for line in out.splitlines())}


# -- kernel headers --------------------------------------------------------------------------------
@pytest.mark.linux
def test_linux_header_matches_madvise_backend(header: dict[str, int]) -> None:
    if "MADV_WIPEONFORK" not in header:
        pytest.skip("these C headers predate MADV_WIPEONFORK (glibc < 2.27)")
    if platform.machine().startswith("parisc"):  # 71/72 in headers up to 6.1, 18/19 after
        assert header["MADV_WIPEONFORK"] in (madvise.MADV_WIPEONFORK, madvise.PARISC_MADV_WIPEONFORK)
        assert header["MADV_KEEPONFORK"] in (madvise.MADV_KEEPONFORK, madvise.PARISC_MADV_KEEPONFORK)
        return
    assert header["MADV_WIPEONFORK"] == madvise.MADV_WIPEONFORK == 18
    assert header["MADV_KEEPONFORK"] == madvise.MADV_KEEPONFORK == 19


@pytest.mark.bsd
def test_bsd_header_matches_minherit_backend(header: dict[str, int]) -> None:
    system = minherit.system_of(sys.platform)
    zero_name, zero_value, release = minherit.ZERO[system]
    copy_name, copy_value = minherit.COPY[system]
    if zero_name not in header:
        pytest.skip(f"<sys/mman.h> has no {zero_name}: {system} older than {release}")
    assert header[zero_name] == zero_value
    assert header[copy_name] == copy_value
    if system == "netbsd":
        assert header["MAP_INHERIT_DONATE_COPY"] == minherit.NETBSD_MAP_INHERIT_DONATE_COPY


# -- the generated cffi module ------------------------------------------------------------------------
def test_native_module_is_up_to_date() -> None:
    if not GENERATOR.is_file():
        pytest.skip(f"the generator is not beside the tests ({GENERATOR})")
    result = subprocess.run([sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, (
        f"inherit/_native.py is stale: run python tools/gen_native.py\n{result.stderr}"
    )


def test_installed_native_module_is_the_generated_one() -> None:
    import inherit._native

    source = ROOT / "inherit" / "_native.py"
    if not source.is_file():
        pytest.skip("no source tree beside the tests")
    assert Path(inherit._native.__file__).read_text() == source.read_text()


# -- the docs' platform table ------------------------------------------------------------------------------
def platform_table() -> dict[str, dict[str, str]]:
    """The first Markdown table whose header starts with "Platform", as {platform: {column: cell}}."""
    if not DOCS_PAGE.is_file():
        pytest.skip(f"no docs beside the tests ({DOCS_PAGE})")
    lines = DOCS_PAGE.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.lstrip().startswith("|") and cells[0] == "Platform":
            header, rows = cells, {}
            for row in lines[i + 2 :]:
                if not row.lstrip().startswith("|"):
                    break
                values = [c.strip() for c in row.strip().strip("|").split("|")]
                assert len(values) == len(header), row
                rows[values[0]] = dict(zip(header, values, strict=True))
            return rows
    raise AssertionError(f"no platform table in {DOCS_PAGE}")


def numbers(cell: str) -> list[int]:
    """Integers in a cell, ignoring versions like 6.1 and 4.14."""
    return [int(n) for n in re.findall(r"(?<![\d.])\d+(?![\d.])", cell)]


def test_docs_table_matches_minherit_constants() -> None:
    table = platform_table()
    for system, pretty in (("openbsd", "OpenBSD"), ("freebsd", "FreeBSD"), ("netbsd", "NetBSD")):
        row = table[pretty]
        name, value, release = minherit.ZERO[system]
        assert f"minherit({name})" in row["Call"], row
        assert numbers(row["Zero value"]) == [value], row
        assert numbers(row["Undo value"]) == [minherit.COPY[system][1]], row
        assert minherit.COPY[system][0] in row["Undo value"], row
        assert row["First release"] == release, row
        assert "sys/sys/mman.h" in row["Sources"], row
        assert "fork probe" in row["Verified by"], row
    assert "minherit(2)" in table["OpenBSD"]["Sources"]
    assert "minherit(2)" in table["FreeBSD"]["Sources"]


def test_docs_table_matches_madvise_constants() -> None:
    table = platform_table()
    linux = next(
        row for key, row in table.items() if key.startswith("Linux") and "parisc" not in key.split("(")[0]
    )
    assert "MADV_WIPEONFORK" in linux["Call"]
    assert numbers(linux["Zero value"]) == [madvise.MADV_WIPEONFORK]
    assert numbers(linux["Undo value"]) == [madvise.MADV_KEEPONFORK]
    assert linux["First release"] == "4.14"
    for source in ("include/uapi/asm-generic/mman-common.h", "mm/madvise.c", "madvise(2)"):
        assert source in linux["Sources"]
    assert "smaps" in linux["Verified by"]
    parisc = table["Linux parisc"]
    assert set(numbers(parisc["Zero value"])) == {madvise.PARISC_MADV_WIPEONFORK, madvise.MADV_WIPEONFORK}
    assert set(numbers(parisc["Undo value"])) == {madvise.PARISC_MADV_KEEPONFORK, madvise.MADV_KEEPONFORK}
    assert "arch/parisc/include/uapi/asm/mman.h" in parisc["Sources"]


def test_docs_table_covers_platforms_without_a_mechanism() -> None:
    table = platform_table()
    for pretty in ("macOS", "DragonFly BSD", "Windows"):
        row = table[pretty]
        assert numbers(row["Zero value"]) == [], row
        assert "getpid" in row["Verified by"], row
    assert "osfmk/mach/vm_inherit.h" in table["macOS"]["Sources"]
    illumos = table["illumos"]
    assert "memcntl(MC_INHERIT_ZERO)" in illumos["Call"]
    assert numbers(illumos["Zero value"]) == [8]
    assert "usr/src/uts/common/sys/mman.h" in illumos["Sources"]
