"""Generation speed and peak memory of the synthetic cohort (default: the demo cohort).

Each configuration runs in a fresh Python process so that its peak memory (ru_maxrss of the
process itself and of its worker processes) is its own. Usage:

    python benchmarks/synthetic_generation.py [--n_train 120] [--n_test 40] [--size demo] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys, time
from glmil_auto.synthetic import generate_synthetic_dataset
out, n_train, n_test, size, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
try:
    size = float(size)
except ValueError:
    pass
t = time.perf_counter()
folder = generate_synthetic_dataset(out, n_train=n_train, n_test=n_test, size=size, num_processes=workers, progress=False)
dt = time.perf_counter() - t
size_mb = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20
print(json.dumps({"seconds": dt, "self_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "children_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "size_mb": size_mb}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n_train", type=int, default=120)
    p.add_argument("--n_test", type=int, default=40)
    p.add_argument("--size", default="demo")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()
    n = args.n_train + args.n_test
    print(f"synthetic cohort: {args.n_train} training + {args.n_test} external cases, size {args.size}\n")
    print("| workers | wall s | cases/s | s/case | peak RSS main MiB | peak RSS worker MiB | dataset MiB |")
    print("|--------:|-------:|--------:|-------:|------------------:|--------------------:|------------:|")
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            res = subprocess.run(
                [sys.executable, "-c", CHILD, tmp, str(args.n_train), str(args.n_test), str(args.size), str(workers)],
                check=True, capture_output=True, text=True,
            )
        r = json.loads(res.stdout.strip().splitlines()[-1])
        worker = r["children_kib"] / 1024 if workers > 1 else float("nan")
        print(f"| {workers:>7} | {r['seconds']:>6.1f} | {n / r['seconds']:>7.2f} | {r['seconds'] / n:>6.3f} | "
              f"{r['self_kib'] / 1024:>17.0f} | {worker:>19.0f} | {r['size_mb']:>11.0f} |")


if __name__ == "__main__":
    main()
