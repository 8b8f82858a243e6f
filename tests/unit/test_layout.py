"""The lab extension's pure layout module (labextension/src/layout.ts), tested under Node.

`node --test labextension/test/` bundles layout.ts with esbuild and checks the graph
built from `roar dag --json`-shaped documents (nodes, artifact edges, stale/failed
marks, verbatim labels) and both layouts (dagre; the fast one used for large DAGs).
npm dependencies are installed from the committed lock file if missing: never skipped.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

EXT = Path(__file__).resolve().parents[2] / "labextension"


def test_layout_module_under_node():
    if not (EXT / "node_modules" / "esbuild").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=EXT, check=True)
    p = subprocess.run(["node", "--test", "test/"], cwd=EXT, capture_output=True, text=True, timeout=300)
    print(p.stdout[-3000:])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "# fail 0" in p.stdout
