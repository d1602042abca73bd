"""What a converted raw dataset holds, printed at the end of every conversion.

The report is read back from the written folder (``dataset.json``, ``clinical{Tr,Ts}.csv``,
``lesions{Tr,Ts}.csv``), so it shows what the pipeline will see, not what the converter meant to
write: cases per split, channels, labels and lesion labels, the clinical columns (declared features
and the columns kept but not declared), each endpoint with its known cases and events, and the
lesion table's rows and lesion-level endpoints.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from glmil_auto.dataset import layout
from glmil_auto.dataset.dataset_json import DATASET_JSON


def _read(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path, dtype=str, keep_default_na=False) if path.is_file() else None


def _endpoint_line(name: str, spec: dict, table: pd.DataFrame) -> str:
    if spec.get("type") == "survival":
        time = pd.to_numeric(table.get(spec["time"], pd.Series(dtype=str)), errors="coerce")
        event = pd.to_numeric(table.get(spec["event"], pd.Series(dtype=str)), errors="coerce")
        known = time.notna() & event.notna()
        return (f"{name} (survival: {spec['time']}, {spec['event']}): {int(known.sum())} known, "
                f"events {int(event[known].sum())}")
    values = pd.to_numeric(table.get(name, pd.Series(dtype=str)), errors="coerce")
    extra = ", any lesion" if spec.get("aggregation") == "any_lesion" else ""
    return f"{name} (binary{extra}): {int(values.notna().sum())} known, positive {int(np.nansum(values))}"


def conversion_report(folder: Path) -> list[str]:
    """The report's lines for the raw dataset ``folder`` (see the module docstring)."""
    folder = Path(folder)
    info = json.loads((folder / DATASET_JSON).read_text())
    channels = info.get("channel_names", {})
    lines = [f"Converted {folder.name}:"]
    counts = []
    for split in layout.SPLITS:
        n = len(list((folder / f"labels{split}").glob("*.nii.gz"))) if (folder / f"labels{split}").is_dir() else 0
        if n:
            counts.append(f"{n} {split}")
    lines.append(f"  cases: {', '.join(counts) or 'none'}")
    lines.append("  channels: " + ", ".join(f"{k} {v}" for k, v in sorted(channels.items(), key=lambda kv: int(kv[0]))))
    lines.append(f"  labels: {info.get('labels')}; lesion labels {info.get('lesion_labels')}")
    table = pd.concat([t for s in layout.SPLITS if (t := _read(folder / f"clinical{s}.csv")) is not None],
                      ignore_index=True)
    features = info.get("clinical_features", {})
    lines.append("  clinical features: " + (", ".join(f"{c} ({k})" for c, k in features.items()) or "none"))
    endpoints = info.get("endpoints", {})
    endpoint_columns = {c for n, d in endpoints.items()
                        for c in ([d["time"], d["event"]] if d.get("type") == "survival" else [n])}
    case_column = info.get("case_column", "case_id")
    kept = [c for c in table.columns if c not in features and c not in endpoint_columns and c != case_column]
    lines.append("  other columns kept: " + (", ".join(kept) or "none"))
    lines.append("  endpoints:" + (" none" if not endpoints else ""))
    lines += [f"    {_endpoint_line(n, d, table)}" for n, d in endpoints.items()]
    lesion_tables = [t for s in layout.SPLITS if (t := _read(folder / f"lesions{s}.csv")) is not None]
    if lesion_tables:
        lesions = pd.concat(lesion_tables, ignore_index=True)
        level = [n for n, d in endpoints.items() if d.get("aggregation") == "any_lesion"]
        positive = ", ".join(f"{n} positive {int(np.nansum(pd.to_numeric(lesions[n], errors='coerce')))}"
                             for n in level if n in lesions)
        lines.append(f"  lesion table: {len(lesions)} lesions in {lesions[case_column].nunique()} cases"
                     + (f"; {positive}" if positive else ""))
    else:
        lines.append("  lesion table: none")
    return lines
