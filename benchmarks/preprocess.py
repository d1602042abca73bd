"""Throughput and peak memory of glmil_plan_and_preprocess, and of nnU-Net v2 on the same folder.

Each run is a fresh command (a new process tree); peak memory is the largest sum of the resident
memory of the whole tree (main process plus workers), sampled every 50 ms from /proc. Usage:

    python benchmarks/preprocess.py [--raw RAW_FOLDER] [--dataset 1] [--workers 1 2] [--without-features]
                                    [--without-foci]

Without ``--raw`` the demo synthetic cohort (120 + 40 cases) is generated in a temporary folder.
Where nnU-Net v2 is installed (``nnUNetv2_plan_and_preprocess`` on the PATH, or ``nnunetv2``
importable, e.g. ``pip install --no-deps --target DIR nnunetv2 dynamic-network-architectures`` and
``PYTHONPATH=DIR``, which keeps this environment's torch), it runs
``-c 3d_fullres`` on the same raw folder with the same worker count, and the table shows the ratio.
``--without-features`` adds a glmil row without the per-lesion radiomic features
(``--planner GLMILPlannerNoLesionFeatures``), so that their cost shows; the last lines print the
features' seconds per case and per lesion (hand-crafted + mirp's IBSI families). ``--without-foci`` adds
a row without the small-foci channel (``--planner GLMILPlannerNoSmallFoci``) and prints the ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return out


def _tree_rss_bytes(root: int) -> int:
    total, stack, page = 0, [root], os.sysconf("SC_PAGE_SIZE")
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
        stack += _children(pid)
    return total


def run_measured(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak tree RSS (MiB) of a command; raises if it fails."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0]

    def sample() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], _tree_rss_bytes(process.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = process.communicate()
    seconds = time.perf_counter() - start
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{output[-3000:]}")
    return seconds, peak[0] / 2**20


def _nnunet_command() -> list[str] | None:
    """nnU-Net's plan-and-preprocess command: the console script, or the module when nnunetv2 is
    importable without its scripts (installed with ``--target`` next to this environment)."""
    script = shutil.which("nnUNetv2_plan_and_preprocess")
    if script:
        return [script]
    try:
        import importlib.util

        if importlib.util.find_spec("nnunetv2") is not None:
            return [sys.executable, "-m", "nnunetv2.experiment_planning.plan_and_preprocess_entrypoints"]
    except (ImportError, ValueError):
        pass
    return None


def _count_lesions(dataset: Path) -> int:
    """Lesion components of every label file (imagesTr and imagesTs), for the cost per lesion."""
    import numpy as np
    import SimpleITK as sitk
    from scipy import ndimage

    total = 0
    for folder in ("labelsTr", "labelsTs"):
        for path in sorted((dataset / folder).glob("*.nii.gz")) if (dataset / folder).is_dir() else []:
            mask = sitk.GetArrayFromImage(sitk.ReadImage(str(path))) > 0
            total += int(ndimage.label(mask, structure=np.ones((3, 3, 3)))[1])
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", type=Path, default=None, help="raw folder holding the dataset (default: generate the demo cohort)")
    parser.add_argument("--dataset", default="1")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--without-features", action="store_true",
                        help="also time glmil without the per-lesion radiomic features")
    parser.add_argument("--without-foci", action="store_true",
                        help="also time glmil without the small-foci channel and descriptor")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="glmil_bench_"))
    try:
        raw = args.raw
        if raw is None:
            raw = work / "raw"
            subprocess.run([sys.executable, "-m", "glmil_auto.synthetic.entry_points", "-o", str(raw), "-np", "2",
                            "--no_progress"], check=True, stdout=subprocess.DEVNULL)
        from glmil_auto.paths import resolve_dataset_name

        name = resolve_dataset_name(args.dataset, [raw])
        n_cases = sum(1 for split in ("imagesTr", "imagesTs") if (raw / name / split).is_dir()
                      for p in (raw / name / split).glob("*_0000.nii.gz"))
        n_train = sum(1 for _ in (raw / name / "imagesTr").glob("*_0000.nii.gz"))
        n_lesions = _count_lesions(raw / name)
        rows = []
        for workers in args.workers:
            env = dict(os.environ, glmil_raw=str(raw), glmil_preprocessed=str(work / f"pre_{workers}"),
                       glmil_results=str(work / "results"))
            seconds, peak = run_measured(
                [sys.executable, "-m", "glmil_auto.preprocessing.entry_points", "-d", name, "-np", str(workers),
                 "--no_progress", "-device", "cpu"], env)
            rows.append(("glmil_plan_and_preprocess", workers, n_cases, seconds, peak))
            variants = [("no lesion features", "GLMILPlannerNoLesionFeatures", args.without_features),
                        ("no small foci", "GLMILPlannerNoSmallFoci", args.without_foci)]
            for label, planner, wanted in variants:
                if not wanted:
                    continue
                env_plain = dict(env, glmil_preprocessed=str(work / f"pre_{planner}_{workers}"))
                seconds, peak = run_measured(
                    [sys.executable, "-m", "glmil_auto.preprocessing.entry_points", "-d", name, "-np", str(workers),
                     "--no_progress", "-device", "cpu", "--planner", planner], env_plain)
                rows.append((f"glmil_plan_and_preprocess, {label}", workers, n_cases, seconds, peak))
            nnunet = _nnunet_command()
            if nnunet:
                env.update(nnUNet_raw=str(raw), nnUNet_preprocessed=str(work / f"nnunet_pre_{workers}"),
                           nnUNet_results=str(work / "nnunet_results"))
                seconds, peak = run_measured(
                    nnunet + ["-d", str(int(name[7:10])), "-c", "3d_fullres", "-np", str(workers), "-npfp", str(workers)], env)
                rows.append(("nnUNetv2_plan_and_preprocess -c 3d_fullres", workers, n_train, seconds, peak))

        print(f"\n{name}: {n_cases} cases for glmil_auto (imagesTr + imagesTs), {n_train} for nnU-Net (imagesTr only)")
        print(f"{'tool':<44} {'workers':>7} {'cases':>6} {'seconds':>8} {'cases/s':>8} {'s/case':>7} {'peak MiB':>9}")
        for tool, workers, cases, seconds, peak in rows:
            print(f"{tool:<44} {workers:>7} {cases:>6} {seconds:>8.1f} {cases / seconds:>8.2f} {seconds / cases:>7.3f} {peak:>9.0f}")
        for workers in args.workers:
            ours = [r for r in rows if r[1] == workers and r[0].startswith("glmil")]
            theirs = [r for r in rows if r[1] == workers and r[0].startswith("nnUNet")]
            if ours and theirs:
                ratio = (ours[0][2] / ours[0][3]) / (theirs[0][2] / theirs[0][3])
                print(f"workers={workers}: throughput glmil/nnU-Net = {ratio:.2f}x, peak memory ratio = "
                      f"{ours[0][4] / theirs[0][4]:.2f}")
        for workers in args.workers:
            with_features = [r for r in rows if r[1] == workers and r[0] == "glmil_plan_and_preprocess"]
            without = [r for r in rows if r[1] == workers and r[0].endswith("no lesion features")]
            if with_features and without:
                extra = with_features[0][3] - without[0][3]
                print(f"workers={workers}: the lesion features cost {extra / n_cases:.3f} s per case, "
                      f"{extra * workers / max(n_lesions, 1):.3f} CPU-s per lesion ({n_lesions} lesions)")
        for workers in args.workers:
            with_foci = [r for r in rows if r[1] == workers and r[0] == "glmil_plan_and_preprocess"]
            without = [r for r in rows if r[1] == workers and r[0].endswith("no small foci")]
            if with_foci and without:
                print(f"workers={workers}: with / without the small-foci channel = {with_foci[0][3] / without[0][3]:.2f}x "
                      f"the time ({(with_foci[0][3] - without[0][3]) / n_cases:+.3f} s per case)")
        if not _nnunet_command():
            print("(nnunetv2 is not installed: pip install nnunetv2 to compare)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
