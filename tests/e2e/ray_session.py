"""Writes a session shaped like a Ray run into a project (for the browser test's folding check); prints its id.

A driver job wrote shards.txt and started 12 calls of the Ray function `featurize`
(`ray_task` jobs, children of the driver), each reading shards.txt and writing
one part; a last job reads every part. Through the store's public API, as
`roar run` records a script's Ray tasks.
"""

import sys
import time

from roar_nb.model import Edge, Job
from roar_nb.session import Project


def main(root: str, n: int = 12) -> None:
    store = Project.find(root).store
    s = store.new_session("cli", name=f"ray ({n} tasks)")
    now = time.time()
    shards = Edge("out", f"{root}/ray/shards.txt", f"{1:064x}", 8)
    common = dict(session_id=s.id, seq=0, cwd=root, exit_code=0, status="ok", backend="preload",
                  capture_level="complete")
    store.insert_job(Job(id=f"d{0:031x}", kind="run", step="driver", command="python pipeline.py",
                         started_at=now, ended_at=now + n + 2, outputs=(shards,), **common))
    for i in range(n):
        store.insert_job(Job(id=f"d{i + 1:031x}", kind="ray_task", step="featurize",
                             command=f"ray task featurize (attempt 0) #{i}", started_at=now + i + 0.5,
                             ended_at=now + i + 1, parent_job_id=f"d{0:031x}",
                             inputs=(Edge("in", shards.path, shards.hash, 8),),
                             outputs=(Edge("out", f"{root}/ray/part{i}.bin", f"{i + 2:064x}", 8),), **common))
    store.insert_job(Job(id=f"d{n + 1:031x}", kind="run", step="collect", command="python collect.py",
                         started_at=now + n + 3, ended_at=now + n + 4,
                         inputs=tuple(Edge("in", f"{root}/ray/part{i}.bin", f"{i + 2:064x}", 8) for i in range(n)),
                         **common))
    print(s.id)


if __name__ == "__main__":
    main(sys.argv[1])
