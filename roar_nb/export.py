"""Rendering a reproduction plan as a runnable bash script or notebook (nbformat v4, validated).

Both render the plan of reproduce.make_plan, steps in replay order, and end by
recomputing the targets' blake3 against the recorded ones (printing `identical`).
The script runs CLI jobs as quoted argv in their recorded directory and each
notebook session's cells as one `python -` heredoc. The notebook has a markdown
header (target, hash, date, commit, environment), one code cell per step (cells
keep their source; CLI jobs become `subprocess.run(argv)` cells run in their
recorded directory) and a verifying last cell. Recorded strings reach either only
through `roar_nb.sanitise` (quoted bash words, Markdown escaping, `ascii()`
literals). This module writes only the file it is asked to write.
"""

from __future__ import annotations

import os
import time

from roar_nb.reproduce.plan import Plan
from roar_nb.sanitise import (
    cell_as_python,
    drop_roar_magics,
    heredoc,
    md,
    py_literal,
    sh_quote,
    text,
)


def script(plan: Plan) -> str:
    """A bash script that replays the plan and checks the targets' blake3.

    Nothing recorded can break out of where it is put: every word is quoted
    (`sh_quote`), comments go through `present.text` (no newline can end them), and
    each heredoc's delimiter is chosen so that no line of its body equals it
    (all rules in `roar_nb.sanitise`).
    """
    env = plan.environment
    lines = ["#!/usr/bin/env bash", f"# Reproduces {text(plan.target)} (recorded by roar-nb).",
             f"# git commit: {text(env.get('git_commit') or '-')}; python {text(env.get('python') or '?')}",
             "set -euo pipefail", ""]
    for group in plan.replay:
        j = group[0]
        if j.kind == "cell":
            lines.append(f"# notebook cells {', '.join(g.ref for g in group)} (one Python process shares their state)")
            lines.append(f"cd {sh_quote(j.cwd)}")
            body = []
            for g in group:
                if g.preamble:
                    body.append(f"# --- untraced cells before {g.ref} ---")
                    body.extend(cell_as_python(g.preamble))
                body.append(f"# --- {g.ref} ---")
                body.extend(cell_as_python(g.source or ""))
            lines.extend(heredoc("python -", "ROAR_CELLS", body))
        else:
            lines.append(f"# {j.ref}")
            command = " ".join(sh_quote(a) for a in j.argv) if j.argv else j.command
            lines.append(f"cd {sh_quote(j.cwd)} && {command}")
    lines.append("")
    lines.extend(heredoc("python -", "ROAR_CHECK", [
        "import blake3, os, sys",
        f"expected = {py_literal(_target_paths(plan))}",
        "bad = [p for p, h in expected.items() if blake3.blake3(open(p, 'rb').read()).hexdigest() != h]",
        "print('identical' if not bad else 'differs: ' + ', '.join(map(ascii, bad))); sys.exit(1 if bad else 0)",
    ]))
    return "\n".join(lines) + "\n"


def _target_paths(plan: Plan) -> dict:
    wanted = set(plan.target_hashes)
    return {e.path: e.hash for j in plan.steps for e in j.outputs if e.hash in wanted}


def to_notebook(plan: Plan):
    import nbformat
    from nbformat import v4

    env = plan.environment
    pkgs = env.get("packages") or {}
    header = [
        f"# Reproduce {md(plan.target)}",
        "",
        f"* target blake3: {', '.join('`' + h + '`' for h in plan.target_hashes)}",
        f"* exported: {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by roar-nb",
        f"* git commit: {md(env.get('git_commit') or '-')} on {md(env.get('git_branch') or '-')}"
        + (" (working tree was dirty)" if env.get("git_dirty") else ""),
        f"* python {md(env.get('python') or '?')} on {md(env.get('platform') or '?')}, {len(pkgs)} packages recorded",
        f"* steps: {len(plan.steps)}; sources needed: "
        + (", ".join(f"{md(s.path)} ({s.hash[:12]})" for s in plan.sources) or "none"),
    ]
    cells = [v4.new_markdown_cell("\n".join(header))]
    cwd = None
    for j in (job for unit in plan.replay for job in unit):
        meta = {"roar": {"job": j.id, "ref": j.ref, "kind": j.kind, "step": j.step}}
        lines = []
        if j.cwd != cwd:
            # Plain Python, not `%cd`/`!cmd`: IPython expands $name and {expr} in magic and
            # shell lines, so a recorded path or argument could run code. ascii() literals
            # carry any bytes (surrogate escapes) and cannot be broken out of.
            lines.append(f"import os; os.chdir({py_literal(j.cwd)})")
            cwd = j.cwd
        if j.kind == "cell":
            if j.preamble:  # untraced cells it relied on (imports, definitions)
                cells.append(v4.new_code_cell(drop_roar_magics(j.preamble),
                                              metadata={"roar": {"preamble_of": j.ref}}))
            lines.append(drop_roar_magics(j.source or ""))
        else:
            run = py_literal(list(j.argv)) if j.argv else f"{py_literal(j.command)}, shell=True"
            lines.append(f"import subprocess; subprocess.run({run}, check=True)  # {text(j.command)}")
        cells.append(v4.new_code_cell("\n".join(lines), metadata=meta))
    expected = _target_paths(plan)
    check = [
        "# Verify: the reproduced target(s) must have the recorded blake3.",
        "import blake3",
        f"expected = {py_literal(expected)}",
        "for path, want in expected.items():",
        "    with open(path, 'rb') as f:",
        "        got = blake3.blake3(f.read()).hexdigest()",
        "    assert got == want, f'{ascii(path)}: blake3 {got} != recorded {want}'",
        "print('identical:', ', '.join(map(ascii, expected)))",
    ]
    cells.append(v4.new_code_cell("\n".join(check)))
    nb = v4.new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "roar": {"target": text(plan.target), "hashes": plan.target_hashes},
    })
    nbformat.validate(nb)
    return nb


def write_notebook(plan: Plan, path: str) -> str:
    import nbformat

    nb = to_notebook(plan)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        nbformat.write(nb, f)
    os.replace(tmp, path)
    return path
