"""Prediction speed: seconds per case and peak memory of the 5-fold ensemble, with and without
mirror test-time augmentation, on this machine's CPU (or ``--device cuda``).

Goal for the CPU plan of the demo cohort: under 5 s per case without TTA on 2 cores. Usage:

    python benchmarks/predict.py [--cases 10] [--device cpu] [--trainer GLMILTrainer_demo]

Uses the demo's trained model folder when ``make demo`` has run (5 folds of GLMILTrainer_demo) and
predicts its external centre; otherwise builds a demo-size cohort in a temporary folder and trains
5 folds for one step each (prediction speed does not depend on how well a model learnt). Each
configuration runs in a fresh process, so that its peak memory is its own.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from glmil_auto.training.trainers.trainer import GLMILTrainer


class BenchmarkOneStepTrainer(GLMILTrainer):
    num_epochs = 1
    iterations_per_epoch = 1
    warmup_epochs = 0
    num_augmentation_workers = 0


def ensure_model(trainer: str, work: Path) -> tuple[Path, Path]:
    """(model folder, raw dataset folder) with 5 trained folds and an imagesTs."""
    from glmil_auto.paths import DatasetNotFoundError, raw_folder, resolve_dataset_name, results_folder

    try:
        name = resolve_dataset_name("1", [results_folder()])
        model = results_folder() / name / f"{trainer}__plans"
        if len(list(model.glob("fold_[0-4]/checkpoint_final.pt"))) == 5 and (raw_folder() / name / "imagesTs").is_dir():
            return model, raw_folder() / name
    except DatasetNotFoundError:
        pass
    from glmil_auto.experiment_planning.device_profile import detect_device_profile
    from glmil_auto.preprocessing.plan_and_preprocess import plan_and_preprocess
    from glmil_auto.synthetic import generate_synthetic_dataset
    from glmil_auto.training.run_training import run_training

    for variable in ("raw", "preprocessed", "results"):
        os.environ[f"glmil_{variable}"] = str(work / variable)
    raw = generate_synthetic_dataset(work / "raw", n_train=40, n_test=10, size="demo", seed=0, num_processes=2,
                                     progress=False)
    plan_and_preprocess(1, num_processes=2, device=detect_device_profile("cpu"), progress=False)
    for fold in range(5):
        run_training(1, fold, "BenchmarkOneStepTrainer")
    return Path(os.environ["glmil_results"]) / Path(raw).name / "BenchmarkOneStepTrainer__plans", Path(raw)


def run_configuration(model: str, raw: str, cases: int, use_tta: bool, device: str, out: str, queue) -> None:
    import torch

    from glmil_auto.inference.case_reader import list_prediction_cases
    from glmil_auto.inference.predictor import GLMILPredictor, preprocess_files

    started = time.perf_counter()
    predictor = GLMILPredictor(model, device=device, use_tta=use_tta)
    load_seconds = time.perf_counter() - started
    images = Path(out) / "images"
    masks = Path(out) / "masks"
    images.mkdir(parents=True), masks.mkdir()
    chosen = list_prediction_cases(Path(raw) / "imagesTs", predictor.spec)[:cases]
    for case in chosen:
        for path in (Path(raw) / "imagesTs").glob(f"{case}_*"):
            shutil.copy(path, images / path.name)
        shutil.copy(Path(raw) / "labelsTs" / f"{case}{predictor.spec.file_ending}", masks)
    started = time.perf_counter()
    for case in chosen:
        preprocess_files(str(images), str(masks), case, predictor.spec, predictor.plans)
    preprocess_seconds = (time.perf_counter() - started) / len(chosen)
    started = time.perf_counter()
    frame, failures = predictor.predict_from_files(images, masks, Path(out) / "predictions",
                                                   Path(raw) / "clinicalTs.csv", progress=False)
    seconds = (time.perf_counter() - started) / len(chosen)
    if failures:
        raise RuntimeError(f"cases failed: {failures}")
    queue.put({"tta": use_tta, "cases": len(frame), "load_s": load_seconds, "s_per_case": seconds,
               "preprocess_s_per_case": preprocess_seconds, "folds": len(predictor.networks),
               "variants": len(predictor.variants), "threads": torch.get_num_threads(),
               "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--trainer", default="GLMILTrainer_demo")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="glmil_predict_bench_") as tmp:
        model, raw = ensure_model(args.trainer, Path(tmp) / "data")
        context = multiprocessing.get_context("spawn")
        rows = []
        for use_tta in (False, True):
            queue = context.Queue()
            process = context.Process(target=run_configuration, args=(str(model), str(raw), args.cases, use_tta,
                                                                      args.device, str(Path(tmp) / f"tta{use_tta}"), queue))
            process.start()
            rows.append(queue.get())
            process.join()
    print(f"\nmodel {model} ({rows[0]['folds']} folds), {rows[0]['cases']} cases of the external centre, "
          f"device {args.device}, torch threads {rows[0]['threads']}, network loading {rows[0]['load_s']:.1f} s")
    print(f"{'TTA':<5} {'variants':>8} {'s/case':>8} {'of which preprocessing':>23} {'cases/s':>8} {'peak MiB':>9}")
    for row in rows:
        print(f"{'on' if row['tta'] else 'off':<5} {row['variants']:>8} {row['s_per_case']:>8.2f} "
              f"{row['preprocess_s_per_case']:>23.2f} {1 / row['s_per_case']:>8.2f} {row['peak_mib']:>9.0f}")


if __name__ == "__main__":
    main()
