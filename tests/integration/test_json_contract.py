"""The `roar dag --json` / `roar show --json` contract (ARCHITECTURE.md "JSON contract"), pinned
by exact key sets: keys are only ever added, and an addition must be made here and in the
document on purpose (the lab extension and users' scripts read these shapes). Every document
is also validated against roar_nb/shapes.schema.json, the contract the lab extension's
TypeScript types are checked against (labextension/test/schema.test.mjs)."""

from __future__ import annotations

import json

import jsonschema

from roar_nb import shapes


def conforms(doc, name: str) -> None:
    """`doc` is valid against `$defs/name` of the shapes schema (raises with the first error)."""
    schema = {**shapes.schema(), "$ref": f"#/$defs/{name}"}
    jsonschema.Draft202012Validator(schema).validate(doc)

DAG = {"session", "dag_hash", "jobs"}
JOB = {"id", "ref", "seq", "step", "kind", "command", "source", "cwd", "exit_code", "status", "started_at",
       "ended_at", "duration", "backend", "capture_level", "capture_notes", "notebook", "cell_id",
       "execution_count", "git", "session", "parent_job", "inputs", "outputs", "depends_on", "stale",
       "superseded"}
GIT = {"commit", "branch", "dirty", "root"}
EDGE = {"path", "hash", "size", "changed", "note"}
ARTIFACT = {"hash", "size", "digests", "paths", "producers", "consumers", "reproductions"}
ARTIFACT_REF = {"job", "ref", "session", "path", "command"}
REPRODUCTION = {"id", "created_at", "target", "target_hashes", "mode", "directory", "ok", "plan", "verdicts"}
VERDICT = {"path", "expected", "actual", "verdict", "job", "target"}


def _json(proj, *args):
    return json.loads(proj.roar(*args).stdout)


def test_the_schema_pins_the_same_key_sets():
    defs = shapes.schema()["$defs"]
    jsonschema.Draft202012Validator.check_schema(shapes.schema())
    assert set(defs["dag"]["properties"]) == DAG
    assert set(defs["job"]["required"]) == JOB
    assert set(defs["job"]["properties"]) == JOB | {"label", "notebook_path", "reproductions"}
    assert set(defs["git"]["properties"]) == GIT and set(defs["edge"]["properties"]) == EDGE
    assert set(defs["artifact"]["properties"]) == ARTIFACT
    assert set(defs["artifactRef"]["properties"]) == ARTIFACT_REF
    assert set(defs["reproduction"]["properties"]) == REPRODUCTION
    assert set(defs["verdict"]["properties"]) == VERDICT


def _check_job(j):
    assert set(j) == JOB
    assert set(j["git"]) == GIT
    for e in j["inputs"] + j["outputs"]:
        assert set(e) == EDGE


def test_dag_and_show_json_key_sets(proj):
    (proj.root / "a.txt").write_text("a\n")
    proj.roar("run", "cp", "a.txt", "b.txt")
    proj.roar("run", "sh", "-c", "cat b.txt > c.txt")
    proj.roar("reproduce", "c.txt", "--run", "-y")

    dag = _json(proj, "dag", "--json")
    conforms(dag, "dag")
    assert set(dag) == DAG and len(dag["jobs"]) == 2
    for j in dag["jobs"]:
        _check_job(j)
    cp, cat = dag["jobs"]
    assert cp["inputs"] and cp["outputs"] and cat["depends_on"] == [cp["id"]]

    shown = _json(proj, "show", "@2", "--json")
    conforms(shown, "job")
    assert set(shown) == JOB | {"reproductions"}
    _check_job({k: v for k, v in shown.items() if k != "reproductions"})
    assert len(shown["reproductions"]) == 1
    for r in shown["reproductions"]:
        assert set(r) == REPRODUCTION
        assert r["verdicts"] and all(set(v) == VERDICT for v in r["verdicts"])

    for j in _json(proj, "log", "--json"):
        conforms(j, "job")

    art = _json(proj, "show", "b.txt", "--json")
    conforms(art, "artifact")
    assert set(art) == ARTIFACT
    assert art["producers"] and art["consumers"]
    for ref in art["producers"] + art["consumers"]:
        assert set(ref) == ARTIFACT_REF
