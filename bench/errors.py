"""User-facing errors: one clear line naming the cause and the remedy, exit code 2."""

from __future__ import annotations

import difflib


class UserError(Exception):
    """An error caused by input the user controls (an option, a file, a name).

    The CLI prints ``error: <message>`` as a single line and exits with code 2.
    """


def did_you_mean(name: str, choices, what: str, where: str = "") -> UserError:
    """An error for an unknown ``name`` that suggests the closest choices: ``unknown <what>
    <name><where>. Did you mean ...? Available: ...``."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return UserError(f"unknown {what} {name!r}{where}.{hint} Available: {', '.join(choices)}.")
