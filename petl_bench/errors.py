"""The one exception type the CLI turns into a single line on stderr and a non-zero exit, and the
"did you mean" that names the near misses of a mistyped name."""

import difflib


class UserError(Exception):
    """Bad input from the user: a path, a name, a value. Its message is the whole story."""


def near_names(name: str, known) -> list[str]:
    """The known names close to a mistyped one (at most three, closest first)."""
    return difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)


def did_you_mean(name: str, known) -> str:
    """`did you mean coop, coop-mt?` for the known names near a mistyped one; "" when none is near."""
    near = near_names(name, known)
    return f"did you mean {', '.join(near)}?" if near else ""


def unknown_name(what: str, name: str, known) -> str:
    """`unknown method 'copo' (did you mean coop, coop-mt?)`, or with no near name every known one."""
    hint = did_you_mean(name, known) or f"known: {', '.join(known)}"
    return f"unknown {what} {name!r} ({hint})"
