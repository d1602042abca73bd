"""``glmil_predict`` and ``glmil_predict_from_modelfolder`` (nnUNetv2_predict's user experience).

Exit status 0 when every case was predicted; 1 when some failed (the others are written, and
``OUT/failed_cases.json`` names the failures and why); 2 for a model, argument or input-folder
problem (a missing or unsafe model folder, no matching image files, an output folder that cannot
be written), with one line saying what is wrong.
"""

from __future__ import annotations

import argparse
import logging
import sys

from glmil_auto.experiment_planning.plans_io import DEFAULT_PLANS_NAME
from glmil_auto.inference.model_folder import DEFAULT_CHECKPOINT


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--images", required=True,
                        help="folder with {case}_{cccc} channel files, as imagesTr (e.g. a raw dataset's imagesTs)")
    parser.add_argument("-o", "--output", required=True, help="output folder")
    parser.add_argument("-c", "--clinical", default=None,
                        help="clinical table (CSV, columns as clinicalTr.csv; outcome columns are ignored)")
    parser.add_argument("-f", "--folds", nargs="+", default=None, help="folds to ensemble (default: every trained fold)")
    parser.add_argument("-chk", "--checkpoint", default=DEFAULT_CHECKPOINT, help="checkpoint name (default: %(default)s)")
    parser.add_argument("--disable_tta", action="store_true", help="no mirror test-time augmentation (faster)")
    parser.add_argument("--save_gradcam", action="store_true",
                        help="write {case}_{endpoint}_gradcam maps of the global encoder in the input's geometry")
    parser.add_argument("--explain", action="store_true",
                        help="write each case's SHAP contributions (clinical variables, lesion count and volume, "
                             "image branches) per endpoint into <case>.json")
    parser.add_argument("-npp", "--num_processes_preprocessing", type=int, default=0,
                        help="worker processes reading and preprocessing cases (default: 0, in-process)")
    parser.add_argument("--horizons", nargs="+", type=float, default=[12.0, 24.0],
                        help="times at which to write survival probabilities <endpoint>_surv_<t>, in the unit of the "
                             "dataset's time column (default: %(default)s)")
    parser.add_argument("--continue_prediction", action="store_true", help="skip cases already written in the output")
    parser.add_argument("--harmonise", action="store_true",
                        help="harmonise the lesion features of centres the model was not trained on: every fold's "
                             "harmoniser is first fitted on each new centre's own cases of this run (grouped by the "
                             "clinical table's centre column; cases without one form one group), which needs a first "
                             "pass that preprocesses every case. Without it only training centres are harmonised")
    parser.add_argument("-device", "--device", choices=("cpu", "cuda"), default=None,
                        help="default: cuda when available, else cpu")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")


def _run(args: argparse.Namespace, model_folder: str, masks: str, argv: list[str]) -> int:
    from glmil_auto.dataset.problems import DatasetError
    from glmil_auto.inference.model_folder import ModelFolderError
    from glmil_auto.inference.predictor import GLMILPredictor

    try:
        predictor = GLMILPredictor(model_folder, args.folds, args.checkpoint, args.device, use_tta=not args.disable_tta,
                                   horizons=args.horizons)
        frame, failures = predictor.predict_from_files(
            args.images, masks, args.output, args.clinical, save_gradcam=args.save_gradcam,
            continue_prediction=args.continue_prediction, num_processes=args.num_processes_preprocessing,
            progress=not args.no_progress, command_line=argv, explain=args.explain, harmonise=args.harmonise)
    except (ModelFolderError, FileNotFoundError, DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the output folder cannot be created or written
        print(f"error: cannot write the predictions to {args.output}: {exc.strerror or exc}"
              f"{f' ({exc.filename})' if exc.filename else ''}", file=sys.stderr)
        return 2
    print(f"predicted {len(frame)} case(s) with fold(s) {predictor.model.folds} -> {args.output}/predictions.csv")
    if failures:
        print(f"{len(failures)} case(s) failed (see {args.output}/failed_cases.json):", file=sys.stderr)
        for case, message in failures.items():
            print(f"  {case}: {message}", file=sys.stderr)
        return 1
    return 0


def predict_entry(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="glmil_predict", description="Predict new cases with a trained fold ensemble.")
    _common_arguments(parser)
    parser.add_argument("-m", "--masks", required=True, help="folder with the {case} lesion masks (e.g. labelsTs)")
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or name the model was trained on")
    parser.add_argument("-tr", "--trainer", default="GLMILTrainer", help="trainer class (default: %(default)s)")
    parser.add_argument("-p", "--plans", default=DEFAULT_PLANS_NAME, help="plans identifier (default: %(default)s)")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from glmil_auto.inference.model_folder import model_folder_for
    from glmil_auto.paths import DatasetNotFoundError

    try:
        folder = model_folder_for(args.dataset, args.trainer, args.plans)
    except DatasetNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return _run(args, str(folder), args.masks, ["glmil_predict", *argv])


def predict_from_modelfolder_entry(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="glmil_predict_from_modelfolder",
                                     description="Predict with a model folder (<Trainer>__<plans>) copied anywhere; "
                                                 "no raw or preprocessed data needed.")
    _common_arguments(parser)
    parser.add_argument("-m", "--model_folder", required=True, help="the <Trainer>__<plans> folder holding fold_*")
    parser.add_argument("-l", "--masks", required=True, help="folder with the {case} lesion masks (e.g. labelsTs)")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    return _run(args, args.model_folder, args.masks, ["glmil_predict_from_modelfolder", *argv])


if __name__ == "__main__":
    sys.exit(predict_entry())
