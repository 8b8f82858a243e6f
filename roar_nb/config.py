"""Every setting roar-nb reads: ROAR_* environment variables and .roar/config.toml keys.

This is the one place that names them. It must stay import-light (the CLI's hot
path loads it): stdlib only, and the TOML file is parsed only when asked for.
"""

from __future__ import annotations

import os
import sys

from roar_nb.model import record
from roar_nb.errors import ConfigError

ROAR_DIR = ".roar"
DB_NAME = "roar.db"
CONFIG_NAME = "config.toml"

# --- environment variables -------------------------------------------------
ENV_PROJECT = "ROAR_PROJECT"  # directory holding .roar/ (skips the upward search)
ENV_PRELOAD_LIB = "ROAR_PRELOAD_LIB"  # path of libroar_preload.so
ENV_TRACE_DIR = "ROAR_TRACE_DIR"  # set by roar for the native tracer; not for users
ENV_PTRACE_BIN = "ROAR_PTRACE_BIN"  # set by roar: the tracer the preload library hands static programs to
ENV_CONTROL = "ROAR_CONTROL"  # a kernel's control block (rust/EVENTS.md), followed by its descendants; not for users
ENV_TRACER = "ROAR_TRACER"  # overrides tracer.default for one command
ENV_QUIET = "ROAR_QUIET"  # "1": no run summary
ENV_NOTEBOOK = "ROAR_NOTEBOOK"  # notebook path, for headless runs whose frontend does not say
ENV_BUSY_TIMEOUT = "ROAR_BUSY_TIMEOUT"  # seconds a writer waits for the DB lock (default 60)
ENV_DIE_WITH = "ROAR_DIE_WITH"  # set by roar run: the native side ties the command's life to roar's pid
ENV_PROXY = "ROAR_PROXY"  # "1"/"0": overrides proxy.enabled for one command
ENV_ACTIVE_STORAGE_URL = "ROAR_ACTIVE_STORAGE_URL"  # where roar_nb.activestorage sends reductions (set by roar)
ENV_ACTIVE_STORAGE_MEMORY = "ROAR_ACTIVE_STORAGE_MEMORY_MIB"  # read by roar-proxy: memory budget of reductions
ENV_ACTIVE_STORAGE_THREADS = "ROAR_ACTIVE_STORAGE_THREADS"  # read by roar-proxy: reductions computing at once


@record(frozen=True)
class Key:
    """One configuration key: its default, type and the line `roar config list` shows."""

    name: str
    default: object
    help: str

    @property
    def type(self) -> type:
        return type(self.default)


KEYS = {k.name: k for k in [
    Key("filters.ignore_system_reads", True,
        "Drop reads under /usr, /lib, /lib64, /bin, /sbin, /etc, /opt/conda/pkgs, /var/lib"),
    Key("filters.ignore_package_reads", True,
        "Drop reads of the interpreter, its stdlib and site-packages (sys.prefix, sys.base_prefix)"),
    Key("filters.ignore_cache_reads", True,
        "Drop reads under ~/.cache, __pycache__ and *.pyc files"),
    Key("filters.ignore_paths", [],
        "Extra path prefixes whose reads are dropped (list of strings)"),
    Key("output.quiet", False, "Do not print the one-line summary after a traced job"),
    Key("hash.extra", [], "Extra digests to keep beside blake3, e.g. [\"sha256\"]"),
    Key("hash.progress_after", 1.0, "Seconds of hashing before a progress bar appears"),
    Key("tracer.default", "auto", "Capture backend for roar run: auto | preload | ptrace | none"),
    Key("notebook.summary", True, "Print one line after each traced cell"),
    Key("notebook.auto_trace", False, "Trace every cell from %load_ext on (like %roar on)"),
    Key("proxy.enabled", False, "Route S3 clients of every roar run through a job-scoped S3 proxy"),
    Key("proxy.port", 9090, "Port of the standalone proxy daemon (roar proxy start); roar run picks a free one"),
    Key("proxy.upstream", "", "S3 endpoint the proxy forwards to (default: $ROAR_UPSTREAM_S3_ENDPOINT, "
        "else https://s3.<region>.amazonaws.com)"),
    Key("ray.enabled", True, "Capture Ray tasks started by a traced command (each task becomes a job)"),
    Key("ray.actor_attribution", "per_call", "A job per actor method call (per_call) or per actor (per_actor)"),
    Key("ray.transport", "auto", "How task records reach roar: auto (the spool directory when the worker "
        "sees it, else a named Ray actor) | spool | actor"),
    Key("proxy.region", "", "Region the proxy signs upstream requests for (default: $AWS_REGION, else us-east-1)"),
    Key("proxy.active_storage_memory_mib", 0, "Memory budget of active-storage reductions in MiB (0: "
        "$ROAR_ACTIVE_STORAGE_MEMORY_MIB, else 1024)"),
    Key("proxy.active_storage_threads", 0, "Active-storage reductions computing at once (0: "
        "$ROAR_ACTIVE_STORAGE_THREADS, else the CPU count)"),
]}

SYSTEM_PREFIXES = ("/usr/", "/lib/", "/lib64/", "/bin/", "/sbin/", "/etc/", "/var/lib/",
                   "/var/cache/", "/proc/", "/sys/", "/dev/", "/run/")


def _parse_toml(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return {}
    if not any(ln.strip() and not ln.lstrip().startswith(b"#") for ln in data.splitlines()):
        return {}  # the file `roar init` writes: no need to import tomllib (~5 ms)
    import tomllib

    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None


def _flatten(doc: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in doc.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


def _check(name: str, value: object) -> object:
    """Key-specific checks beyond the type, so a value accepted today cannot break every
    later job (an unknown digest name, a tracer that does not exist)."""
    choices = {"ray.actor_attribution": ("per_call", "per_actor"), "ray.transport": ("auto", "spool", "actor")}
    if name in choices and value not in choices[name]:
        raise ConfigError(f"{name} must be one of {', '.join(choices[name])}, got {value!r}")
    if name == "tracer.default":
        tracers = ("auto", "preload", "ptrace", "none")  # capture/select.py TRACERS
        if value not in tracers:
            raise ConfigError(f"{name} must be one of {', '.join(tracers)}, got {value!r}")
    elif name == "hash.extra":
        import hashlib  # only when extra digests are configured: not on the usual path

        names = []
        for algo in value:
            if not isinstance(algo, str):
                raise ConfigError(f"{name} expects names of digests, got {algo!r}")
            a = algo.strip().lower()
            # shake_* need a length to print: not a fixed digest.
            if a not in hashlib.algorithms_available or a.startswith("shake_") or a == "blake3":
                raise ConfigError(f"{name}: unknown digest {algo!r} (e.g. sha256, sha1, md5)")
            names.append(a)
        return names
    elif name == "filters.ignore_paths":
        for p in value:
            if not isinstance(p, str) or not p:
                raise ConfigError(f"{name} expects a list of path strings, got {p!r}")
    elif name == "hash.progress_after" and value != value:  # NaN
        raise ConfigError(f"{name} expects a number, got {value!r}")
    return value


def coerce(name: str, value: object) -> object:
    """Convert a user-given value (often a CLI string) to the key's type and check it, or
    raise ConfigError."""
    key = KEYS.get(name)
    if key is None:
        raise ConfigError(f"unknown config key {name!r} (see `roar config list`)")
    t = key.type
    if t is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)  # TOML `progress_after = 2`
    if isinstance(value, t) and not (t is int and isinstance(value, bool)):
        return _check(name, value)
    if not isinstance(value, str):
        raise ConfigError(f"{name} expects {t.__name__}, got {value!r}")
    s = value.strip()
    if t is bool:
        if s.lower() in ("1", "true", "yes", "on"):
            return True
        if s.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} expects true or false, got {value!r}")
    if t is float:
        try:
            return _check(name, float(s))
        except ValueError:
            raise ConfigError(f"{name} expects a number, got {value!r}") from None
    if t is int:
        try:
            return int(s)
        except ValueError:
            raise ConfigError(f"{name} expects an integer, got {value!r}") from None
    if t is list:
        return _check(name, [p.strip() for p in s.split(",") if p.strip()])
    return _check(name, s)


class Config:
    """Settings of one project: defaults overlaid by .roar/config.toml.

    Loading never fails: a file that is not valid TOML, or a value that is not valid
    for its key, degrades to the defaults, and `warnings` says so (one line each) for
    the front end to show. `set` is strict: a bad value is refused, and a file that
    cannot be parsed is not rewritten (it would lose what the user wrote)."""

    def __init__(self, roar_dir: str | None):
        self.path = os.path.join(roar_dir, CONFIG_NAME) if roar_dir else None
        self._values = {}
        self._kept = {}  # values from the file that are invalid or unknown: written back as they are
        self.warnings: list[str] = []
        self._unparsed = None  # why the file could not be read at all
        if self.path is not None and os.path.exists(self.path):
            try:
                doc = _parse_toml(self.path)
            except ConfigError as e:
                self._unparsed = str(e)
                self.warnings.append(f"{e}; using the default settings")
                doc = {}
            for name, value in _flatten(doc).items():
                if name not in KEYS:
                    self._kept[name] = value
                    continue
                try:
                    self._values[name] = coerce(name, value)
                except ConfigError as e:
                    self._kept[name] = value
                    self.warnings.append(f"{CONFIG_NAME}: {e}; using the default")

    def get(self, name: str) -> object:
        if name not in KEYS:
            raise ConfigError(f"unknown config key {name!r} (see `roar config list`)")
        return self._values.get(name, KEYS[name].default)

    def items(self):
        for name in KEYS:
            yield name, self.get(name), name in self._values

    def set(self, name: str, value: object) -> object:
        if self._unparsed:
            raise ConfigError(f"{self._unparsed}; fix or remove it first")
        value = coerce(name, value)
        self._values[name] = value
        self._kept.pop(name, None)
        self._write()
        return value

    def _write(self) -> None:
        if self.path is None:
            raise ConfigError("no project: run `roar init` first")
        sections: dict[str, dict] = {}
        for name, value in (*self._kept.items(), *self._values.items()):
            sec, _, leaf = name.rpartition(".")
            sections.setdefault(sec, {})[leaf] = value
        lines = ["# roar-nb project settings; `roar config list` shows every key.", ""]
        for sec in sorted(sections):  # "" (top-level keys) sorts first and needs no header
            if sec:
                lines.append(f"[{sec}]")
            for leaf, value in sorted(sections[sec].items()):
                lines.append(f"{leaf} = {_toml_value(value)}")
            lines.append("")
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "w") as f:
                f.write("\n".join(lines))
            os.replace(tmp, self.path)
        except OSError as e:
            raise ConfigError(f"cannot write {self.path}: {e.strerror or e}") from None


def _toml_value(v: object) -> str:
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))  # a JSON string is a valid TOML basic string


def read_filters(cfg: Config) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(prefixes, suffix/segment markers) of reads to drop, from the filter keys."""
    prefixes: list[str] = []
    if cfg.get("filters.ignore_system_reads"):
        prefixes += SYSTEM_PREFIXES
    if cfg.get("filters.ignore_package_reads"):
        for p in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}:
            prefixes.append(p.rstrip("/") + "/")
        prefixes.append(os.path.expanduser("~/.pyenv/"))
        prefixes.append(os.path.expanduser("~/.local/lib/"))
    markers: list[str] = []
    if cfg.get("filters.ignore_cache_reads"):
        prefixes.append(os.path.expanduser("~/.cache/"))
        markers += ["/__pycache__/", ".pyc"]
    prefixes += [p if p.endswith("/") else p + "/" for p in cfg.get("filters.ignore_paths")]
    return tuple(prefixes), tuple(markers)
