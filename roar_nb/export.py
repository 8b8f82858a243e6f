"""Exporting an artifact's lineage as a runnable notebook (nbformat v4, validated).

The notebook is the reproduction plan of reproduce.make_plan written out: a
markdown header (target, hash, date, commit, environment), one code cell per
step in order (cells keep their source; CLI jobs become `!command` cells run in
their recorded directory), and a last cell that recomputes the target's blake3
and asserts it equals the recorded one.
"""

from __future__ import annotations

import os
import shlex
import time

from roar_nb.reproduce import Plan


def to_notebook(plan: Plan):
    import nbformat
    from nbformat import v4

    env = plan.environment
    pkgs = env.get("packages") or {}
    header = [
        f"# Reproduce `{plan.target}`",
        "",
        f"* target blake3: {', '.join('`' + h + '`' for h in plan.target_hashes)}",
        f"* exported: {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by roar-nb",
        f"* git commit: `{env.get('git_commit') or '-'}` on `{env.get('git_branch') or '-'}`"
        + (" (working tree was dirty)" if env.get("git_dirty") else ""),
        f"* python {env.get('python') or '?'} on {env.get('platform') or '?'}, {len(pkgs)} packages recorded",
        f"* steps: {len(plan.steps)}; sources needed: "
        + (", ".join(f"`{s.path}` ({s.hash[:12]})" for s in plan.sources) or "none"),
    ]
    cells = [v4.new_markdown_cell("\n".join(header))]
    cwd = None
    for j in (job for unit in plan.replay for job in unit):
        meta = {"roar": {"job": j.id, "ref": j.ref, "kind": j.kind, "step": j.step}}
        lines = []
        if j.cwd != cwd:
            lines.append(f"%cd {shlex.quote(j.cwd)}")
            cwd = j.cwd
        if j.kind == "cell":
            if j.preamble:  # untraced cells it relied on (imports, definitions)
                cells.append(v4.new_code_cell(_drop_roar_magics(j.preamble),
                                              metadata={"roar": {"preamble_of": j.ref}}))
            lines.append(_drop_roar_magics(j.source or ""))
        else:
            lines.append(f"!{j.command}")
        cells.append(v4.new_code_cell("\n".join(lines), metadata=meta))
    wanted = set(plan.target_hashes)
    expected = {e.path: e.hash for j in plan.steps for e in j.outputs if e.hash in wanted}
    check = [
        "# Verify: the reproduced target(s) must have the recorded blake3.",
        "import blake3",
        f"expected = {expected!r}",
        "for path, want in expected.items():",
        "    with open(path, 'rb') as f:",
        "        got = blake3.blake3(f.read()).hexdigest()",
        "    assert got == want, f'{path}: blake3 {got} != recorded {want}'",
        "print('identical:', ', '.join(expected))",
    ]
    cells.append(v4.new_code_cell("\n".join(check)))
    nb = v4.new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "roar": {"target": plan.target, "hashes": plan.target_hashes},
    })
    nbformat.validate(nb)
    return nb


def _drop_roar_magics(source: str) -> str:
    return "\n".join(ln for ln in source.splitlines() if not ln.strip().startswith(("%%roar", "%roar")))


def write_notebook(plan: Plan, path: str) -> str:
    import nbformat

    nb = to_notebook(plan)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        nbformat.write(nb, f)
    os.replace(tmp, path)
    return path
