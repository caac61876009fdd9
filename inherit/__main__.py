"""``python -m inherit``: which backend is active here, and why."""

from __future__ import annotations

import sys

from ._diagnostics import report


def main(argv: list[str] | None = None) -> int:
    data = report()
    width = max(len(k) for k in data)
    for key, value in data.items():
        if isinstance(value, dict):
            value = "; ".join(f"{k}: {v}" for k, v in value.items()) or "-"
        elif isinstance(value, list):
            value = ", ".join(value)
        elif value is None:
            value = "-"
        print(f"{key:<{width}}  {value}")
    return 0 if data.get("backend") else 1


if __name__ == "__main__":
    sys.exit(main())
