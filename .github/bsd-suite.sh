#!/bin/sh
# The test run of the BSD jobs in workflows/ci.yml, inside the VM, from the checkout:
#
#   sh .github/bsd-suite.sh PYTHON
#
# PYTHON is the interpreter the system's packages installed (python3.11). Everything goes into
# a venv of its own: the system Python may be externally managed. cffi has no wheels for the
# BSDs on PyPI, so pip builds it from source with the base system's cc against the libffi
# package (found through pkg-config). Then:
#   1. the tests that need this very kernel (markers bsd, kernel_backend), and the job fails if
#      a single one of them was skipped or none ran: a skip there means the backend was not
#      tested at all;
#   2. `python -m inherit` and `python -m inherit check`;
#   3. the whole suite with the default backend, and again with INHERIT_BACKEND=getpid.
set -eu

PYTHON=${1:?usage: sh .github/bsd-suite.sh PYTHON}
WORKSPACE=$(pwd)
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/inherit-ci.XXXXXX")
VENV=$SCRATCH/venv
XDG_CACHE_HOME=$SCRATCH/cache  # a verdict cache of this run's own
export XDG_CACHE_HOME

# A packaged Python may lack ensurepip (configured --without-ensurepip); then the system's pip
# package seeds the venv through the system site-packages instead.
if ! "$PYTHON" -m venv "$VENV"; then
    rm -rf "$VENV"
    "$PYTHON" -m venv --system-site-packages --without-pip "$VENV"
fi
PY=$VENV/bin/python
"$PY" -m pip install --upgrade pip
"$PY" -m pip install "$WORKSPACE[test]"
"$PY" -c 'import cffi, _cffi_backend; print("cffi", cffi.__version__, "from", _cffi_backend.__file__)'

cd "$SCRATCH"  # never import the package from the source tree
"$PY" -m inherit
"$PY" -m inherit check

echo "== tests that need this kernel (none may be skipped)"
"$PY" -m pytest "$WORKSPACE/tests" -p no:cacheprovider -rs \
    -m "(bsd or kernel_backend) and not linux" --junitxml="$SCRATCH/kernel.xml"
"$PY" - "$SCRATCH/kernel.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
total = sum(int(s.get("tests", 0)) for s in suites)
skipped = sum(int(s.get("skipped", 0)) for s in suites)
failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
for case in root.iter("testcase"):
    for skip in case.iter("skipped"):
        print(f"SKIPPED {case.get('classname')}::{case.get('name')}: {skip.get('message')}")
print(f"bsd/kernel_backend tests: {total} selected, {skipped} skipped, {failed} failed")
sys.exit(0 if total > 0 and skipped == 0 and failed == 0 else 1)
EOF

echo "== the whole suite, default backend"
"$PY" -m pytest "$WORKSPACE/tests" -p no:cacheprovider
echo "== the whole suite, INHERIT_BACKEND=getpid"
INHERIT_BACKEND=getpid "$PY" -m pytest "$WORKSPACE/tests" -p no:cacheprovider
