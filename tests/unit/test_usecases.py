"""Use cases moved out of the CLI (issue 10): re-run overrides, init's .gitignore policy, label
patches. Called directly, without argparse, as every front end calls them."""

from __future__ import annotations

import pytest

from roar_nb import gitignore, labels, rerun
from roar_nb.errors import UsageError


@pytest.mark.parametrize("argv, overrides, want", [
    (["python", "t.py", "--lr=0.1"], ["--lr=0.5"], ["python", "t.py", "--lr=0.5"]),
    (["python", "t.py", "--lr", "0.1"], ["--lr", "0.5"], ["python", "t.py", "--lr", "0.5"]),
    (["python", "t.py", "--lr", "0.1"], ["--lr=0.5"], ["python", "t.py", "--lr", "0.5"]),
    (["python", "t.py"], ["--epochs=3", "extra"], ["python", "t.py", "--epochs=3", "extra"]),
    (["python", "t.py", "--fast=1"], ["--fast"], ["python", "t.py", "--fast"]),
    (["python", "t.py"], ["--flag"], ["python", "t.py", "--flag"]),
])
def test_override(argv, overrides, want):
    assert rerun.override(argv, overrides) == want


def test_override_leaves_the_recorded_argv_alone():
    argv = ["a", "--k=1"]
    rerun.override(argv, ["--k=2"])
    assert argv == ["a", "--k=1"]


def test_gitignore_wanted_only_in_a_git_tree_without_the_entry(tmp_path):
    assert not gitignore.wanted(str(tmp_path))  # not a git work tree: never
    (tmp_path / ".git").mkdir()
    assert gitignore.wanted(str(tmp_path))  # no .gitignore yet
    (tmp_path / ".gitignore").write_text("build/\n/.roar\n")
    assert not gitignore.wanted(str(tmp_path))


def test_gitignore_add_appends_on_its_own_line(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".gitignore").write_text("build/")  # no trailing newline: the user's line stays whole
    gitignore.add(str(tmp_path))
    assert (tmp_path / ".gitignore").read_text() == "build/\n.roar/\n"
    assert not gitignore.wanted(str(tmp_path))
    other = tmp_path / "sub"
    other.mkdir()
    gitignore.add(str(other))
    assert (other / ".gitignore").read_text() == ".roar/\n"


def test_label_pairs():
    assert labels.parse_pairs(["a=1", "b=", "c=x=y"]) == {"a": "1", "b": None, "c": "x=y"}
    for bad in (["a"], ["=1"]):
        with pytest.raises(UsageError):
            labels.parse_pairs(bad)
