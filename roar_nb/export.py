"""Exporting an artifact's lineage as a runnable notebook (nbformat v4, validated).

The notebook is the reproduction plan of reproduce.make_plan written out: a
markdown header (target, hash, date, commit, environment), one code cell per
step in order (cells keep their source; CLI jobs become `subprocess.run(argv)`
cells run in their recorded directory), and a last cell that recomputes the
target's blake3 and asserts it equals the recorded one. Recorded strings reach
the notebook only as escaped Markdown text (`md`) or Python `ascii()` literals.
"""

from __future__ import annotations

import os
import time

from roar_nb.present import text
from roar_nb.reproduce import Plan


def md(s: str | None) -> str:
    """Recorded text as inert Markdown: one line (present.text), every ASCII punctuation
    character backslash-escaped (CommonMark), so no tag, link, code span or heading can form
    and nbconvert's HTML shows the characters, not markup."""
    return "".join("\\" + c if c in _MD_PUNCT else c for c in text(s or ""))


_MD_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


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
            lines.append(f"import os; os.chdir({ascii(j.cwd)})")
            cwd = j.cwd
        if j.kind == "cell":
            if j.preamble:  # untraced cells it relied on (imports, definitions)
                cells.append(v4.new_code_cell(_drop_roar_magics(j.preamble),
                                              metadata={"roar": {"preamble_of": j.ref}}))
            lines.append(_drop_roar_magics(j.source or ""))
        else:
            run = ascii(list(j.argv)) if j.argv else f"{ascii(j.command)}, shell=True"
            lines.append(f"import subprocess; subprocess.run({run}, check=True)  # {text(j.command)}")
        cells.append(v4.new_code_cell("\n".join(lines), metadata=meta))
    wanted = set(plan.target_hashes)
    expected = {e.path: e.hash for j in plan.steps for e in j.outputs if e.hash in wanted}
    check = [
        "# Verify: the reproduced target(s) must have the recorded blake3.",
        "import blake3",
        f"expected = {ascii(expected)}",
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


def _drop_roar_magics(source: str) -> str:
    return "\n".join(ln for ln in source.split("\n") if not ln.strip().startswith(("%%roar", "%roar")))


def write_notebook(plan: Plan, path: str) -> str:
    import nbformat

    nb = to_notebook(plan)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        nbformat.write(nb, f)
    os.replace(tmp, path)
    return path
