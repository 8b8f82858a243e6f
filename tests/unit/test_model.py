"""The small stand-ins that keep `roar run` start-up lean must behave like what they replace."""

import json
import shlex
import subprocess

import pytest

from roar_nb.gitinfo import read_git
from roar_nb.model import Edge, Job, asdict, factory, record, replace
from roar_nb.lean import join_argv
from roar_nb.lean import json_string_list as _json_string_list
from roar_nb.lean import json_string_map as _json_string_map
from roar_nb.lean import json_strings as _json_strings

AWKWARD = ["", "plain", "with space", "it's", 'say "hi"', "a\nb", "tab\t", "ünï", "\udcff-bad", "$HOME", "*.py",
           "--epochs=3", "a;b", "back\\slash"]


def test_record_frozen_defaults_factory_replace_asdict():
    @record
    class Draft:
        name: str
        tags: list = factory(list)
        n: int = 3

    a, b = Draft("x"), Draft("y")
    a.tags.append(1)
    assert b.tags == [] and a.n == 3 and a == Draft("x", [1], 3) and "Draft(name='x'" in repr(a)

    e = Edge("in", "/p", "h" * 64, 5)
    with pytest.raises(AttributeError):
        e.path = "/q"
    assert hash(e) == hash(Edge("in", "/p", "h" * 64, 5)) and e.changed is False
    j = Job(id="1", session_id="s", seq=0, kind="run", step="st", command="c", cwd="/", started_at=1.0,
            ended_at=2.5, exit_code=0, status="ok", backend="preload", capture_level="complete", outputs=(e,))
    j2 = replace(j, seq=7)
    assert j2.seq == 7 and j.seq == 0 and j2.ref == "@7" and j2.duration == 1.5
    d = asdict(j2)
    assert d["outputs"] == ({"direction": "in", "path": "/p", "hash": "h" * 64, "size": 5, "changed": False,
                             "note": None, "created": None},)


def test_join_argv_is_shlex_join():
    for i in range(len(AWKWARD)):
        argv = AWKWARD[i:] + AWKWARD[:i]
        assert join_argv(argv) == shlex.join(argv)


def test_json_strings_is_json_dumps():
    assert _json_strings(AWKWARD) == json.dumps(AWKWARD)
    assert _json_strings(()) == "[]"
    assert json.loads(_json_strings(AWKWARD)) == AWKWARD


def test_json_string_map_is_sorted_json_dumps():
    d = {w: AWKWARD[-1 - i] for i, w in enumerate(AWKWARD)}
    assert _json_string_map(d) == json.dumps(d, sort_keys=True)
    assert _json_string_map({}) == "{}"


def test_json_string_list_is_json_loads():
    for doc in (_json_strings(AWKWARD), json.dumps(AWKWARD, indent=1), json.dumps(AWKWARD, ensure_ascii=False),
                "[]", " [ ] ", '["a"]', '[1, "a"]', '["a", null]', '{"a": "b"}'):
        assert _json_string_list(doc) == json.loads(doc), doc
    for bad in ("", "[", '["a"', '["a",]', '["a"] x', "[1,]"):
        with pytest.raises(ValueError):
            _json_string_list(bad)


def test_git_dirty_flag(tmp_path):
    def git(*a):
        subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    git("-c", "user.email=t@e", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "x")
    g = read_git(str(tmp_path)).settle()
    assert g.commit and len(g.commit) == 40 and g.dirty is False and g.root == str(tmp_path)
    (tmp_path / "f").write_text("x")
    git("add", "f")
    assert read_git(str(tmp_path)).settle().dirty is True
    outside = read_git(str(tmp_path.parent))
    assert outside.root is None and outside.commit is None and outside.settle().dirty is None
