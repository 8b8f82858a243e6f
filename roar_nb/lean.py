"""Start-up stand-ins: what the `roar run` path uses instead of a stdlib module that costs start-up time.

A traced `true` has a 60 ms budget and Python itself takes ~17 ms, so every module
`roar run` and `roar status` import stays off these (tests/unit/test_import_budget.py
fails if one comes back; tests/unit/test_model.py checks each stand-in against the
real thing). Each is here once, with its reason:

* `record`, `factory`, `replace`, `asdict` instead of `dataclasses`: importing it pulls
  in `inspect` (with ast, dis and tokenize), ~15 ms, a quarter of the budget.
* `new_id` instead of `uuid.uuid4()`: importing uuid costs ~20 ms.
* `json_strings`, `json_string_list`, `json_string_map` instead of `json` for the job
  rows' string lists and the environment's package map (byte-for-byte what json
  writes, through CPython's C `_json`): `json` imports `re` (~6 ms). `json()` is the
  real module, imported on first use, for everything else.
* `signal`: the C module `_signal`; the `signal` wrapper imports `enum` (~5 ms).
* `which` instead of `shutil.which`: shutil imports bz2 and lzma.
* `join_argv` instead of `shlex.join`: shlex imports `re`.

Not here, but the same rule: paths are `str` (pathlib imports `re`), children start
through `os.posix_spawnp` (not subprocess), `run`/`build`/`status` parse their
arguments by hand (argparse only for help and errors), and sqlite-utils is imported
only by a migration.

Must not: import anything beyond `os` at module level.
"""

from __future__ import annotations

import os

try:  # the C module behind `signal`: the wrapper imports enum (~5 ms of `roar run`)
    import _signal as signal
except ImportError:  # pragma: no cover - non-CPython
    import signal  # noqa: F401 - re-exported

_MISSING = object()


class _Factory:
    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn


def factory(fn):
    """A default produced by calling `fn()` for each instance (like dataclasses' default_factory)."""
    return _Factory(fn)


def record(cls=None, *, frozen: bool = False):
    """Class decorator: `__init__`, `__repr__` and `__eq__` from the annotated fields.

    With `frozen=True` instances are immutable and hashable."""
    def wrap(cls):
        names = list(cls.__dict__.get("__annotations__", {}))
        env = {"_M": _MISSING, "_set": object.__setattr__}
        params, body = [], []
        for n in names:
            d = cls.__dict__.get(n, _MISSING)
            if d is _MISSING:
                params.append(n)
            elif isinstance(d, _Factory):
                env[f"_f_{n}"] = d.fn
                params.append(f"{n}=_M")
                body.append(f"    if {n} is _M: {n} = _f_{n}()")
                delattr(cls, n)
            else:
                env[f"_d_{n}"] = d
                params.append(f"{n}=_d_{n}")
            body.append(f"    _set(self, {n!r}, {n})" if frozen else f"    self.{n} = {n}")
        src = f"def __init__(self, {', '.join(params)}):\n" + ("\n".join(body) or "    pass")
        ns: dict = {}
        exec(src, env, ns)  # noqa: S102 - generated from annotation names, as dataclasses does
        cls.__init__ = ns["__init__"]
        cls.__record_fields__ = tuple(names)

        def __repr__(self):
            return f"{type(self).__name__}(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in names) + ")"

        def __eq__(self, other):
            if type(other) is not type(self):
                return NotImplemented
            return all(getattr(self, n) == getattr(other, n) for n in names)

        cls.__repr__, cls.__eq__ = __repr__, __eq__
        if frozen:
            def __setattr__(self, name, value):
                raise AttributeError(f"{type(self).__name__} is frozen")

            cls.__setattr__ = __setattr__
            cls.__delattr__ = __setattr__
            cls.__hash__ = lambda self: hash(tuple(getattr(self, n) for n in names))
        else:
            cls.__hash__ = None
        return cls

    return wrap if cls is None else wrap(cls)


def replace(obj, **changes):
    """A copy of record `obj` with some fields changed."""
    values = {n: getattr(obj, n) for n in obj.__record_fields__}
    values.update(changes)
    return type(obj)(**values)


def asdict(obj):
    """Records (and lists/tuples/dicts of them) as plain dicts, recursively."""
    if hasattr(obj, "__record_fields__"):
        return {n: asdict(getattr(obj, n)) for n in obj.__record_fields__}
    if isinstance(obj, (list, tuple)):
        return type(obj)(asdict(x) for x in obj)
    if isinstance(obj, dict):
        return {k: asdict(v) for k, v in obj.items()}
    return obj


def new_id() -> str:
    """A random 128-bit id as 32 hex digits (jobs, sessions, reproductions).

    Not uuid.uuid4(): importing uuid costs ~20 ms of `roar run`'s start-up."""
    return os.urandom(16).hex()


def json():
    """The json module, imported on first use: it imports `re`, which `roar run` avoids."""
    import json

    return json


def json_strings(items) -> str:
    """A JSON array of strings, byte-for-byte what json.dumps writes, without importing json."""
    try:
        from _json import encode_basestring_ascii as enc  # CPython's C encoder
    except ImportError:  # pragma: no cover - other interpreters
        return json().dumps(list(items))
    return "[" + ", ".join(enc(s) for s in items) + "]"


def json_string_list(text: str) -> list:
    """json.loads of a JSON array of strings (job argv and capture notes), without importing
    json on `roar status`; anything else goes to json."""
    try:
        from _json import scanstring  # CPython's C string decoder
    except ImportError:  # pragma: no cover - other interpreters
        return json().loads(text)
    out, i, n = [], 1, len(text)
    ws = " \t\n\r"
    try:
        if text[:1] != "[":
            raise ValueError(text)
        while i < n and text[i] in ws:
            i += 1
        if text[i] == "]":
            i += 1
        else:
            while True:
                if text[i] != '"':
                    raise ValueError(text)
                item, i = scanstring(text, i + 1, True)
                out.append(item)
                while text[i] in ws:
                    i += 1
                if text[i] == "]":
                    i += 1
                    break
                if text[i] != ",":
                    raise ValueError(text)
                i += 1
                while text[i] in ws:
                    i += 1
        if text[i:].strip(ws):
            raise ValueError(text)
    except (ValueError, IndexError):
        return json().loads(text)  # not a plain list of strings: the real parser decides
    return out


def json_string_map(d: dict) -> str:
    """json.dumps(d, sort_keys=True) for a dict of strings to strings, without importing json:
    a project's first `roar run` stores its environment's package map."""
    try:
        from _json import encode_basestring_ascii as enc
    except ImportError:  # pragma: no cover - other interpreters
        return json().dumps(d, sort_keys=True)
    return "{" + ", ".join(f"{enc(k)}: {enc(v)}" for k, v in sorted(d.items())) + "}"


def which(program: str, path: str | None = None) -> str | None:
    """Like shutil.which, without importing shutil (and bz2, lzma) on `roar run`'s hot path."""
    for d in (path if path is not None else os.environ.get("PATH", os.defpath)).split(os.pathsep):
        cand = os.path.join(d or ".", program)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-")


def join_argv(argv) -> str:
    """A shell-escaped command line, exactly as shlex.join writes it (without importing re)."""
    def quote(s: str) -> str:
        if not s:
            return "''"
        if all(c in _SAFE for c in s):
            return s
        return "'" + s.replace("'", "'\"'\"'") + "'"

    return " ".join(quote(a) for a in argv)
