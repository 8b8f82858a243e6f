"""The named Ray actor that carries task records when a worker cannot write the spool
directory (`ray.transport = actor`, or `auto` on a worker that does not see the spool:
no shared filesystem). Ray's own channels replace the filesystem: workers `put` each
task's begin marker and fragment line (waiting for the call, so that a record is held
before the task's result reaches the driver), and the driver `take`s them into its
spool (driver.drain) before Ray shuts down, or at the end of every traced cell.

It owns only the actor (one per roar job: named after the spool, in namespace `roar`,
detached, no CPU). It must not be captured itself (worker.py skips roar_nb's own
functions) and must never raise into the user's task: callers catch.
"""

from __future__ import annotations

import os

NAMESPACE = "roar"


def actor_name(spool: str) -> str:
    return "roar-" + os.path.basename(spool.rstrip("/"))


class Collector:
    def __init__(self):
        self.msgs: list = []

    def put(self, kind: str, payload: str) -> None:
        self.msgs.append((kind, payload))

    def take(self) -> list:
        out, self.msgs = self.msgs, []
        return out


def handle(spool: str, create: bool):
    """The collector of this spool's job (created on first use by a worker), or None."""
    import ray

    if not create:
        try:
            return ray.get_actor(actor_name(spool), namespace=NAMESPACE)
        except ValueError:  # no task needed it
            return None
    cls = ray.remote(num_cpus=0, max_restarts=0)(Collector)
    return cls.options(name=actor_name(spool), namespace=NAMESPACE, get_if_exists=True,
                       lifetime="detached").remote()
