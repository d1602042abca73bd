"""Find one file per channel (and the mask) in a patient folder from a glob or regular expression.

A pattern is a glob (``*t1c*.nii.gz``) or, with the prefix ``re:``, a regular expression searched
in the file's path relative to the patient folder (``re:(?i)flair.*\\.nii(\\.gz)?$``). Globs are
matched case-insensitively against both the file name and the relative path (``*`` also crosses
``/``, so files in sub-folders are found). Every pattern must match exactly one file; zero or
several matches are errors that name the folder, the pattern and the candidates.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path

from glmil_auto.dataset.problems import DatasetError, error

REGEX_PREFIX = "re:"


@dataclass(frozen=True)
class FilePattern:
    """What to look for (``name``: the channel name or ``mask``) and how (glob or regex)."""

    name: str
    pattern: str

    @property
    def is_regex(self) -> bool:
        return self.pattern.startswith(REGEX_PREFIX)

    def matches(self, relative: str) -> bool:
        if self.is_regex:
            return re.search(self.pattern[len(REGEX_PREFIX):], relative) is not None
        name = relative.rsplit("/", 1)[-1].lower()
        return fnmatch.fnmatchcase(name, self.pattern.lower()) or fnmatch.fnmatchcase(relative.lower(),
                                                                                    self.pattern.lower())


def parse_pattern(text: str) -> FilePattern:
    """``NAME=PATTERN`` (as given to ``--channel``) -> :class:`FilePattern`; ValueError when malformed."""
    name, sep, pattern = text.partition("=")
    if not sep or not name.strip() or not pattern.strip():
        raise ValueError(f"expected NAME=PATTERN (like T1c='*t1c*.nii.gz'), got {text!r}")
    result = FilePattern(name.strip(), pattern.strip())
    if result.is_regex:
        try:
            re.compile(result.pattern[len(REGEX_PREFIX):])
        except re.error as exc:
            raise ValueError(f"{text!r}: not a valid regular expression ({exc})") from exc
    return result


def files_below(folder: Path) -> list[str]:
    """Relative POSIX paths of the non-hidden files below ``folder``, sorted."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def match_one(folder: Path, pattern: FilePattern, files: list[str]) -> Path:
    """The single file of ``files`` (relative to ``folder``) that ``pattern`` matches."""
    found = [f for f in files if pattern.matches(f)]
    if len(found) == 1:
        return folder / found[0]
    what = f"{pattern.name} pattern {pattern.pattern!r}"
    if not found:
        raise DatasetError(error(f"no file matches the {what} (files: {', '.join(files) or 'none'})",
                                 case=folder.name, file=str(folder)))
    raise DatasetError(error(f"{len(found)} files match the {what}: {', '.join(found)}; make the pattern "
                             "more specific", case=folder.name, file=str(folder)))
