"""Which channel of a raw dataset is the contrast-enhanced T1 and which the FLAIR."""

from __future__ import annotations

from typing import Mapping, Sequence

T1C_TOKENS = ("t1c", "t1post", "t1_post", "t1-post", "t1gd", "t1ce", "ce", "gd", "contrast")
FLAIR_TOKENS = ("flair",)


def _matches(name: str, tokens: Sequence[str]) -> bool:
    """Whole-token match for short tokens ('ce', 'gd'), substring match for long ones."""
    lowered = name.lower()
    words = [w for w in "".join(c if c.isalnum() else " " for c in lowered).split()]
    for token in tokens:
        if len(token) <= 2:
            if token in words:
                return True
        elif token in lowered.replace(" ", ""):
            return True
    return False


def t1c_channel(channel_names: Mapping[int | str, str]) -> int:
    """The contrast-enhanced T1 channel (name contains t1c / t1post / ce ...), else channel 0."""
    for index in sorted(channel_names, key=int):
        if _matches(channel_names[index], T1C_TOKENS) and not _matches(channel_names[index], FLAIR_TOKENS):
            return int(index)
    return 0


def flair_channel(channel_names: Mapping[int | str, str]) -> int | None:
    """The FLAIR channel, or None (oedema features are then NaN)."""
    for index in sorted(channel_names, key=int):
        if _matches(channel_names[index], FLAIR_TOKENS):
            return int(index)
    return None
