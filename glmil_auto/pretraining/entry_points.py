"""``glmil_pretrain -d ID [-d ID2 ...] [--unlabelled IDS] [-p PLANS] [--method contrastive|masked] [--c]``.

Exit status 0 when the encoders were pretrained (or were already); 1 when the data has problems
(the message names the case and the file) or the run cannot start; 2 when a dataset is not found.
"""

from __future__ import annotations

import argparse
import logging
import sys

from glmil_auto.experiment_planning.plans_io import DEFAULT_PLANS_NAME


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="glmil_pretrain", description=(
        "Self-supervised pretraining of the global and the instance encoder on every scan given, without "
        "outcomes. The first -d dataset is the target: its plans fix the architecture, and the run is written "
        "to <glmil_results>/<target>/pretrained/<run>__<plans>/checkpoint_final.pt. Fine-tune with "
        "glmil_train ID FOLD -pretrained_weights FILE."))
    p.add_argument("-d", dest="datasets", action="append", required=True,
                   help="dataset id or name; repeat for more (the first is the target; its imagesTr and imagesTs "
                        "are used, the others are preprocessed with its plans)")
    p.add_argument("--unlabelled", nargs="+", default=[],
                   help="raw datasets without endpoints (e.g. converted UCSF-BMSR, BraTS-METS), preprocessed with "
                        "the target's plans")
    p.add_argument("-p", "--plans", default=DEFAULT_PLANS_NAME, help="plans identifier (default: %(default)s)")
    p.add_argument("--method", choices=("contrastive", "masked"), default=None,
                   help="default: contrastive (best for classification-like tasks downstream)")
    p.add_argument("--c", dest="continue_training", action="store_true", help="continue an interrupted run")
    p.add_argument("--name", default=None, help="run name (default: the method, + _extra-<ids>, _fold<K>, _noTs)")
    p.add_argument("--epochs", type=int, default=None, help="override the planned number of epochs")
    p.add_argument("--fold", type=int, default=None,
                   help="strict setting: only this fold's training cases of the target (no validation cases, no "
                        "imagesTs)")
    p.add_argument("--no-test-images", dest="include_test", action="store_false",
                   help="leave out the target's imagesTs (the external centre)")
    p.add_argument("-device", "--device", choices=("cpu", "cuda"), default=None,
                   help="default: cuda when available, else cpu")
    p.add_argument("-np", "--num_processes", type=int, default=2, help="preprocessing processes of extra datasets")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    return p


def pretrain_entry(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    import torch

    from glmil_auto.dataset.problems import DatasetError
    from glmil_auto.paths import DatasetNotFoundError
    from glmil_auto.pretraining.run_pretraining import run_pretraining

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        path = run_pretraining(args.datasets, args.unlabelled, args.plans, args.method, args.continue_training,
                               device, args.name, args.epochs, args.fold, args.include_test, args.num_processes,
                               not args.no_progress)
    except DatasetNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DatasetError as exc:
        print(f"ERROR: the data has problems:\n{exc}", file=sys.stderr)
        return 1
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"pretrained encoders: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(pretrain_entry())
