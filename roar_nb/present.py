"""The one escaping rule for user text that roar shows: paths, commands, names, notes.

Every view (the terminal views in report.py and cli.py, `--json`, the DB's `path`
column, the REST API and panel, the SVG in render.py) shows a string through
this module, so one file name reads the same everywhere and cannot act:

* bytes that are not UTF-8 (surrogate escapes from `os.fsdecode`) read `\\xNN`,
  the byte's value: a path with byte 0xff shows `\\xff` in every view;
* control characters (C0 including newline, CR and ESC; DEL; C1) read `\\xNN`
  too, so a name can neither move the cursor, set a window title, clear the
  screen, nor fake a line of output;
* invisible reordering characters (bidi embeddings, overrides and isolates,
  LRM/RLM, line and paragraph separators) read `\\uNNNN`, so text cannot be
  displayed in another order than it runs.

The DB's `path` column holds this text too (so `sqlite3` users and every view
agree), and `path_raw` the exact bytes whenever the text differs from the path.
The escape is not reversible (a literal backslash is shown as-is): the exact
bytes live in `path_raw` and the file system, not in a view.

It is also the one vocabulary for the other things every view shows: a short
id (`short_id`) or hash (`short_hash`), a path relative to the working directory
(`path`), a size and a duration.

Must not: import anything beyond `os` (it is on the `roar run` path through the
store and the summary line), or do I/O beyond asking for the working directory.
"""

from __future__ import annotations

import os

# Format characters that reorder or break displayed text (Trojan Source, CVE-2021-42574).
_INVISIBLE = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029")


def _needs(c: str) -> bool:
    o = ord(c)
    return o < 0x20 or 0x7f <= o < 0xa0 or 0xd800 <= o <= 0xdfff or c in _INVISIBLE


def _one(c: str) -> str:
    o = ord(c)
    if 0xdc80 <= o <= 0xdcff:  # a non-UTF-8 byte carried by surrogateescape: show the byte
        return f"\\x{o - 0xdc00:02x}"
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


def text(s: str | None, tabs: bool = False) -> str:
    """`s` safe to show on one line of a terminal, an HTML/SVG text node or a JSON view
    (`tabs`: keep tab characters, for lines of source code)."""
    if not s:
        return s or ""
    if s.isascii() and s.isprintable():
        return s  # the common case, without a per-character loop
    return "".join(_one(c) if _needs(c) and not (tabs and c == "\t") else c for c in s)


def storable(s: str | None) -> str | None:
    """`s` as valid UTF-8 for a TEXT column: only undecodable bytes (surrogate escapes) become
    `\\xNN`. For a command or cwd given as non-UTF-8 bytes, which SQLite cannot hold as text;
    newlines and the like stay (views escape them when they show the text)."""
    if s is None or s.isascii():
        return s
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return "".join(_one(c) if 0xd800 <= ord(c) <= 0xdfff else c for c in s)


def lines(s: str | None) -> list[str]:
    """A multi-line block (cell source, a command with newlines) as escaped lines; tabs stay."""
    return [text(ln.rstrip("\r"), tabs=True) for ln in (s or "").rstrip("\n").split("\n")]


def short_id(ident: str | None) -> str:
    """A job, session or reproduction id (or a git commit) as views show it: 12 hex digits."""
    return (ident or "")[:12]


def short_hash(h: str | None, n: int = 8) -> str:
    """An artifact hash in a column of a table; dashes when the file could not be hashed."""
    return h[:n] if h else "--------"[:n]


def path(p: str, base: str | None = None) -> str:
    """`p` relative to `base` (default: the working directory) when under it, escaped by `text`.
    S3 object URLs are shown whole."""
    if p.startswith("s3://"):
        return text(p)
    base = base or os.getcwd()
    try:
        rel = os.path.relpath(p, base)
    except ValueError:
        return text(p)
    return text(p if rel.startswith("..") else rel)


def size(n: int) -> str:
    """A byte count in B, KiB, MiB or GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def duration(seconds: float) -> str:
    """A duration in ms below a second, s below two minutes, else min."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"
