"""How long does self-supervised pretraining take? Wall time, steps per second, cases per second and
peak memory of one ``glmil_pretrain`` run (the goal: 350 + 300 cases with the CPU plan in at most
20 minutes on two CPU cores).

    python benchmarks/pretrain.py -- -d 10 --unlabelled 11 [any other glmil_pretrain argument]
    python benchmarks/pretrain.py --summarise <glmil_results>/<Dataset>/pretrained/<run>__<plans>

The first form runs ``glmil_pretrain`` as a child process (its peak RSS from ``getrusage(RUSAGE_CHILDREN)``) and then
summarises the run it wrote; the second summarises a finished run from its own files
(``pretraining_plan.json``, ``pretraining_log.json``: per-epoch seconds), without the memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def summarise(folder: Path, wall_seconds: float | None = None, peak_mib: float | None = None) -> dict[str, Any]:
    plan = json.loads((folder / "pretraining_plan.json").read_text())
    log = json.loads((folder / "pretraining_log.json").read_text())
    training = sum(e["seconds"] for e in log)
    steps = len(log) * plan["iterations_per_epoch"]
    return {"run": folder.name, "method": plan["method"], "cases": plan["n_cases"], "lesions": plan["n_lesions"],
            "epochs": len(log), "steps": steps, "training_s": training, "wall_s": wall_seconds,
            "s_per_step": training / max(1, steps), "cases_per_s": plan["n_cases"] * len(log) / max(training, 1e-9),
            "peak_mib": peak_mib, "first_loss": log[0]["train"]["loss"], "last_loss": log[-1]["train"]["loss"]}


def table(row: dict[str, Any]) -> str:
    def fmt(value: Any, spec: str) -> str:
        return "–" if value is None else format(value, spec)

    return "\n".join([
        "| run | method | cases (lesions) | epochs x steps | training min | wall min | s / step | cases / s | peak MiB | loss first -> last epoch |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {row['run']} | {row['method']} | {row['cases']} ({row['lesions']}) | {row['epochs']} x "
        f"{row['steps'] // max(1, row['epochs'])} | {row['training_s'] / 60:.1f} | "
        f"{fmt(None if row['wall_s'] is None else row['wall_s'] / 60, '.1f')} | {row['s_per_step']:.2f} | "
        f"{row['cases_per_s']:.2f} | {fmt(row['peak_mib'], '.0f')} | {row['first_loss']:.3f} -> {row['last_loss']:.3f} |"])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--summarise", type=Path, default=None, help="a finished run's folder")
    parser.add_argument("pretrain_args", nargs=argparse.REMAINDER, help="arguments of glmil_pretrain (after --)")
    args = parser.parse_args(argv)
    if args.summarise is not None:
        row = summarise(args.summarise)
    else:
        command = [str(Path(sys.executable).parent / "glmil_pretrain"),
                   *[a for a in args.pretrain_args if a != "--"], "--no_progress"]
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        output, _ = process.communicate()
        wall = time.perf_counter() - started
        if process.returncode != 0:
            raise SystemExit(f"glmil_pretrain failed (exit {process.returncode}):\n{output[-3000:]}")
        folder = Path(output.strip().splitlines()[-1].split(": ", 1)[1]).parent
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest child: glmil_pretrain
        row = summarise(folder, wall, peak)
    print(f"{os.cpu_count()} CPUs\n\n{table(row)}")
    return row


if __name__ == "__main__":
    main()
