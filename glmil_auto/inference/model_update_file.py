"""``model_update.json``: the update ``glmil_recalibrate`` fitted for a new centre, read back and
applied per case by ``glmil_predict`` (see :mod:`~glmil_auto.inference.model_updating`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from glmil_auto.inference.model_folder import ModelFolderError

UPDATE_FILE = "model_update.json"
UPDATE_FORMAT = "glmil_auto.model_update"
UPDATE_VERSION = 1
ALL_CENTRES = "*"  # the key of an update fitted on every labelled case (no --per-centre)


def read_model_update(model_folder: str | Path) -> dict[str, Any] | None:
    """The folder's update record, or None when it has none; :class:`ModelFolderError` when the
    file is there but is not an update record this version reads."""
    path = Path(model_folder) / UPDATE_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelFolderError(f"{path} cannot be read ({exc}): re-run glmil_recalibrate") from None
    if not isinstance(record, dict) or record.get("format") != UPDATE_FORMAT or record.get("version") != UPDATE_VERSION:
        raise ModelFolderError(f"{path} is not a version-{UPDATE_VERSION} model update: re-run glmil_recalibrate")
    if not isinstance(record.get("centres"), dict) or not record["centres"]:
        raise ModelFolderError(f"{path} holds no update: re-run glmil_recalibrate")
    return record


def update_for_centre(record: dict[str, Any], centre: Any) -> tuple[str | None, dict[str, Any] | None]:
    """``(centre key, {endpoint: update})`` for a case of ``centre``: the single update when the
    record has one for all cases, else the centre's own; ``(None, None)`` when there is none."""
    centres = record["centres"]
    if ALL_CENTRES in centres:
        return ALL_CENTRES, centres[ALL_CENTRES]["endpoints"]
    key = None if centre is None else str(centre)
    if key in centres:
        return key, centres[key]["endpoints"]
    return None, None
