"""`make bench`: run every benchmark module, each in its own process (own peak RSS)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
SKIP = {"__init__", "__main__", "common", "workers", "otel"}  # helpers of the benchmarks


def main() -> int:
    only = set(sys.argv[1:])
    modules = sorted(p.stem for p in HERE.glob("*.py") if p.stem not in SKIP)
    failed = []
    for name in modules:
        if only and name not in only:
            continue
        print(f"\n=== bench/{name}.py ===", flush=True)
        r = subprocess.run([sys.executable, "-m", f"bench.{name}"], check=False)
        if r.returncode != 0:
            failed.append(name)
    if failed:
        print(f"benchmarks failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
