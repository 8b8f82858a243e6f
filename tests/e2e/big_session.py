"""Writes a 500-job session into a project (for the browser test's large-DAG check); prints its id.

Jobs are chained like a long pipeline with skip links (each reads the outputs of
job i-1 and i//2), through the store's public API, as `roar run` would record them.
"""

import sys
import time

from roar_nb.model import Edge, Job
from roar_nb.session import Project


def main(root: str, n: int = 500) -> None:
    store = Project.find(root).store
    s = store.new_session("cli", name="big (500 jobs)")
    now = time.time()
    for i in range(n):
        ins = tuple(Edge("in", f"{root}/big/o{d}.bin", f"{d + 1:064x}", 8) for d in sorted({i - 1, i // 2}) if 0 <= d < i)
        outs = (Edge("out", f"{root}/big/o{i}.bin", f"{i + 1:064x}", 8),)
        store.insert_job(Job(id=f"b{i:031x}", session_id=s.id, seq=0, kind="run", step=f"big{i}",
                             command=f"python step.py --part {i}", cwd=root, started_at=now + i,
                             ended_at=now + i + 0.5, exit_code=0 if i % 97 else 1,
                             status="ok" if i % 97 else "failed", backend="preload",
                             capture_level="complete", inputs=ins, outputs=outs))
    print(s.id)


if __name__ == "__main__":
    main(sys.argv[1])
