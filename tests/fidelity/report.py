"""Print, per backend, recall and precision of reads and writes against `strace -f`.

    .venv/bin/python tests/fidelity/report.py [--keep DIR]

Runs the whole fidelity corpus (fidelity_corpus.py) under strace (ground truth),
the preload library and the ptrace tracer, then prints one table and every
case where a backend disagrees with strace. "Silent misses" counts programs
where a backend missed a read or write without any capture note, i.e. where
`roar run` would have called the job `complete`. Prints only; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fidelity_corpus as fc  # noqa: E402


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", help="run in this directory (kept) instead of a temporary one")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="roar-fidelity-") as tmp:
        root = Path(a.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        results, mismatches = fc.run_corpus(root)
    n = len(fc.CASES)
    print(f"Capture fidelity against strace -f ({n} programs; paths inside each program's directory)\n")
    print(f"{'Backend':<44}{'Reads recall':>14}{'Reads precision':>17}{'Writes recall':>15}{'Writes precision':>18}"
          f"{'Silent misses':>15}")
    # No corpus case is marked `static` any more (static programs are handed to ptrace under
    # preload too); the flag stays in the corpus for programs no backend could hand over.
    rows = ((True, True, ""), (True, False, " (inline syscalls excepted)"))
    for b in fc.BACKENDS:
        for include_static, include_beyond, suffix in rows:
            if b.startswith("ptrace") and suffix:
                continue  # ptrace has no exceptions
            r, w = fc.scores(results, b, include_static, include_beyond)
            silent = sum(1 for x in results if x.backend == b and x.silent_miss
                         and (include_static or not x.static) and (include_beyond or not x.beyond_libc))
            label = b + suffix
            print(f"{label:<44}{pct(r.recall):>14}{pct(r.precision):>17}{pct(w.recall):>15}{pct(w.precision):>18}"
                  f"{silent:>15}")
    print()
    if mismatches:
        print("strace disagrees with the corpus's declared sets (corpus bug or strace gap):")
        for name, er, ew, sr, sw in mismatches:
            print(f"  {name}: declared reads {sorted(er)} writes {sorted(ew)}; strace reads {sorted(sr)} writes {sorted(sw)}")
    diffs = [r for r in results if (r.reads, r.writes) != (r.truth_reads, r.truth_writes)]
    if diffs:
        print("Disagreements with strace:")
    for r in diffs:
        parts = []
        for kind, truth, seen in (("reads", r.truth_reads, r.reads), ("writes", r.truth_writes, r.writes)):
            if truth - seen:
                parts.append(f"missed {kind} {sorted(truth - seen)}")
            if seen - truth:
                parts.append(f"extra {kind} {sorted(seen - truth)}")
        tag = f" [said: {r.notes[0]}]" if r.notes else " [SILENT: no note, the job would say complete]"
        print(f"  {r.backend:<8} {r.case}: " + "; ".join(parts) + tag)
    if not diffs:
        print("Every backend agrees with strace on every program.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
