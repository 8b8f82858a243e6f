"""Capture backends and what they have in common.

A backend observes a job's file operations and yields `model.Event`s in the one
vocabulary of rust/EVENTS.md. Native backends (the preload library) write event
files into a trace directory, read back by `events.read_trace_dir`; the
in-process audit-hook backend produces the same events in memory. `events.reduce`
turns any event stream into a job's inputs and outputs. Backends never hash,
never touch the store and never print.
"""

from roar_nb.capture.events import Reduced, read_trace_dir, reduce

__all__ = ["Reduced", "read_trace_dir", "reduce"]
