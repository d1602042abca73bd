"""Problems found in a raw dataset, each naming the case and the file, and the error that carries them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

ERROR = "error"
WARNING = "warning"
NOTE = "note"  # what a conversion found (columns used, files seen): printed, never fails anything


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset: how bad, where (case and file) and what."""

    severity: str
    message: str
    case: str | None = None
    file: str | None = None

    def __str__(self) -> str:
        where = []
        if self.case is not None:
            where.append(f"case {self.case}")
        if self.file is not None:
            where.append(self.file)
        location = f" [{' | '.join(where)}]" if where else ""
        return f"{self.severity.upper()}{location}: {self.message}"


def error(message: str, case: str | None = None, file: str | None = None) -> Problem:
    return Problem(ERROR, message, case, file)


def warning(message: str, case: str | None = None, file: str | None = None) -> Problem:
    return Problem(WARNING, message, case, file)


def note(message: str, case: str | None = None, file: str | None = None) -> Problem:
    return Problem(NOTE, message, case, file)


class DatasetError(ValueError):
    """Bad raw input. The message names the case, the file and what is wrong.

    ``problems`` keeps every :class:`Problem` so that callers (and tests) can inspect them.
    """

    def __init__(self, problems: Problem | Iterable[Problem]):
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def __reduce__(self):
        # keeps the problems when the error crosses a process boundary (worker pools)
        return (type(self), (self.problems,))


def raise_if_errors(problems: Iterable[Problem]) -> None:
    """Raise a :class:`DatasetError` holding every error (warnings are not raised)."""
    errors = [p for p in problems if p.severity == ERROR]
    if errors:
        raise DatasetError(errors)
