"""Recorded text made inert where generated code puts it: bash words, heredocs, Markdown, Python.

One module for every rule `export` uses, so the script and the notebook cannot
drift: a bash word is quoted (`sh_quote`), a heredoc's delimiter is one no body
line equals (`heredoc`), a comment or Markdown line is one printable line
(`present.text`, then `md`), and Python gets `ascii()` literals (`py_literal`),
which carry any bytes (surrogate escapes) and cannot be broken out of. Cell source
loses roar's magics (`drop_roar_magics`) or becomes plain Python (`cell_as_python`).
It renders nothing itself and must not import the store or run anything.
"""

from __future__ import annotations

import os
import shlex

from roar_nb.present import text

__all__ = ["cell_as_python", "drop_roar_magics", "heredoc", "md", "py_literal", "sh_quote", "text"]

_MD_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def md(s: str | None) -> str:
    """Recorded text as inert Markdown: one line (present.text), every ASCII punctuation
    character backslash-escaped (CommonMark), so no tag, link, code span or heading can form
    and nbconvert's HTML shows the characters, not markup."""
    return "".join("\\" + c if c in _MD_PUNCT else c for c in text(s or ""))


def sh_quote(word: str) -> str:
    """One shell word that bash reads back as exactly `word` (its bytes, if not UTF-8).

    Plain text gets shlex's single quotes; a word with control characters or
    undecodable bytes gets bash's $'...' with those bytes as \\xNN, so the script
    stays printable text and a newline cannot start a line of its own.
    """
    if text(word) == word:  # printable (UTF-8) text
        return shlex.quote(word)
    return "$'" + "".join(chr(b) if 0x20 <= b < 0x7f and b not in (0x27, 0x5c) else f"\\x{b:02x}"
                          for b in os.fsencode(word)) + "'"


def heredoc(command: str, stem: str, body: list[str]) -> list[str]:
    """`command <<'DELIM'` + body + DELIM, with a DELIM no body line equals (quoted: no expansion)."""
    taken = set(body)
    delim, n = stem, 0
    while delim in taken:
        n += 1
        delim = f"{stem}_{n}"
    return [f"{command} <<'{delim}'", *body, delim]


def py_literal(value) -> str:
    """A Python literal for recorded strings (or lists/dicts of them): ascii(), so surrogate-escaped
    (non-UTF-8) path bytes become \\udcNN escapes, which open() turns back into the same bytes."""
    return ascii(value)


def drop_roar_magics(source: str) -> str:
    """Cell source without its `%roar`/`%%roar` lines (the exported notebook runs untraced)."""
    return "\n".join(ln for ln in source.split("\n") if not ln.strip().startswith(("%%roar", "%roar")))


def cell_as_python(source: str) -> list[str]:
    """Cell source as plain Python: magic lines commented out, `!cmd` turned into subprocess calls."""
    out = []
    for ln in source.split("\n"):  # "\n" only: splitlines() would also split at \x0b, \x1c, \u2028...
        ln = ln.rstrip("\r")
        s = ln.strip()
        if s.startswith("%"):
            out.append("# " + ln)
        elif s.startswith("!"):
            indent = ln[: len(ln) - len(ln.lstrip())]
            out.append(f"{indent}__import__('subprocess').run({s[1:]!r}, shell=True, check=True)")
        else:
            out.append(ln)
    return out
