"""Without Ray importable, `roar run` behaves as before: the hook variables it sets are
inert, the script's own ImportError handling runs unchanged, and the job has no Ray note.
(`python -S` leaves site-packages, hence Ray, off the path: a real missing Ray.)"""

import subprocess
import sys

SCRIPT = '''
import os, sys
try:
    import ray
except ImportError as e:
    print("no ray:", e)
with open("out.txt", "w") as f:
    f.write("x")
sys.exit(3)
'''


def test_roar_run_without_ray(proj):
    (proj.root / "s.py").write_text(SCRIPT)
    bare = subprocess.run([sys.executable, "-S", "s.py"], cwd=proj.root, capture_output=True)
    r = proj.roar("run", sys.executable, "-S", "s.py", check=False)
    assert r.returncode == bare.returncode == 3
    assert r.stdout == bare.stdout and b"no ray: No module named 'ray'" in r.stdout
    job = proj.roar("show", "@1", "--json").stdout.decode()
    assert "out.txt" in job and "Ray" not in job
