"""Item 4 of issue 12: a config value that would break every later job.

`roar config set` refuses it in one line (and leaves config.toml alone); a bad value
written by hand degrades to the default with one warning, and the job runs and is
recorded."""

from __future__ import annotations

import sqlite3

import pytest

from _faults import bare, db_jobs, roar, roar_lines


@pytest.mark.parametrize("key,value", [
    ("hash.extra", "sha256,nosuchalgo"),
    ("tracer.default", "nosuch"),
    ("hash.progress_after", "soon"),
])
def test_set_refuses_a_bad_value_in_one_line(proj, key, value):
    cfg = proj.root / ".roar" / "config.toml"
    before = cfg.read_bytes()
    r = roar(["config", "set", key, value], proj.root)
    assert r.returncode != 0 and r.stdout == b""
    assert r.stderr.count(b"\n") == 1 and r.stderr.startswith(b"roar: error: ") and b"Traceback" not in r.stderr
    assert cfg.read_bytes() == before


def test_set_accepts_a_good_extra_digest_and_jobs_keep_it(proj):
    r = roar(["config", "set", "hash.extra", "SHA256"], proj.root)
    assert r.returncode == 0 and r.stdout == b'hash.extra = ["sha256"]\n'
    (proj.root / "in.txt").write_text("x")
    r = roar(["run", "-q", "cp", "in.txt", "out.txt"], proj.root)
    assert r.returncode == 0 and r.stderr == b""
    conn = sqlite3.connect(proj.root / ".roar" / "roar.db")
    assert conn.execute("SELECT count(*) FROM artifact_digests WHERE algo = 'sha256'").fetchone()[0] == 1


@pytest.mark.parametrize("toml,warns_about", [
    ("[filters]\nignore_paths = [1, 2]\n", b"filters.ignore_paths"),
    ('[hash]\nextra = ["nosuchalgo"]\n', b"hash.extra"),
    ("[tracer]\ndefault = 3\n", b"tracer.default"),
    ('[hash]\nprogress_after = "soon"\n', b"hash.progress_after"),
])
def test_hand_edited_bad_value_degrades_with_one_warning(proj, toml, warns_about):
    (proj.root / ".roar" / "config.toml").write_text(toml)
    (proj.root / "in.txt").write_text("data\n")
    cmd = ["sh", "-c", "cat in.txt; cat in.txt > out.txt; exit 2"]
    b = bare(cmd, proj.root)
    r = roar(["run", "-q", *cmd], proj.root)
    assert (r.returncode, r.stdout) == (b.returncode, b.stdout) == (2, b"data\n")
    assert len(roar_lines(r.stderr)) == r.stderr.count(b"\n") == 1
    assert r.stderr.startswith(b"roar: warning: config.toml: ") and warns_about in r.stderr
    assert r.stderr.rstrip().endswith(b"using the default")
    assert db_jobs(proj.root)[-1][2] == 2
    conn = sqlite3.connect(proj.root / ".roar" / "roar.db")
    io = conn.execute("SELECT direction, path FROM job_io ORDER BY direction, path").fetchall()
    assert io == [("in", str(proj.root / "in.txt")), ("out", str(proj.root / "out.txt"))]


def test_set_does_not_destroy_an_unparsable_file(proj):
    cfg = proj.root / ".roar" / "config.toml"
    cfg.write_text("[filters\nignore_paths = [")
    r = roar(["config", "set", "output.quiet", "true"], proj.root)
    assert r.returncode != 0 and r.stderr.count(b"\n") == 1 and b"invalid TOML" in r.stderr
    assert cfg.read_text() == "[filters\nignore_paths = ["


def test_set_keeps_what_it_does_not_understand(proj):
    cfg = proj.root / ".roar" / "config.toml"
    cfg.write_text('[filters]\nignore_paths = [1, 2]\n\n[future]\nsetting = "kept"\n')
    r = roar(["config", "set", "output.quiet", "true"], proj.root)
    assert r.returncode == 0
    text = cfg.read_text()
    assert "ignore_paths = [1, 2]" in text and 'setting = "kept"' in text and "quiet = true" in text
