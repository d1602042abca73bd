"""The error every DICOM-RT conversion step raises: one line naming the patient, the file and the problem."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable


@dataclass(frozen=True)
class DicomProblem:
    """One thing wrong with the DICOM input; ``str()`` gives the one-line message the command prints."""

    message: str
    patient: str | None = None
    file: str | Path | None = None
    severity: str = "error"

    def __str__(self) -> str:
        where = []
        if self.patient is not None:
            where.append(f"patient {self.patient}")
        if self.file is not None:
            where.append(str(self.file))
        location = f" [{' | '.join(where)}]" if where else ""
        return f"{self.severity.upper()}{location}: {self.message}"


class DicomConversionError(ValueError):
    """Bad DICOM input (or a bad option for it); ``problems`` holds every problem found."""

    def __init__(self, problems: DicomProblem | Iterable[DicomProblem]):
        self.problems = [problems] if isinstance(problems, DicomProblem) else list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def fail(message: str, patient: str | None = None, file: str | Path | None = None) -> DicomConversionError:
    """The error to ``raise`` for one problem."""
    return DicomConversionError(DicomProblem(message, patient, file))
