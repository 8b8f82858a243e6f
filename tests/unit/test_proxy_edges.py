"""Folding the S3 proxy's events into job edges (roar_nb.proxy.to_edges, read_events)."""

from __future__ import annotations

import json

from roar_nb import proxy


def ev(op, d, key, h=None, size=1, etag="e", rng=None, vid=None, t=0):
    return {"v": 1, "t_ns": t, "op": op, "dir": d, "bucket": "b", "key": key, "blake3": h, "size": size,
            "etag": etag, "range": rng, "version_id": vid}


def test_read_before_write_is_an_input_and_last_write_wins():
    ins, outs, digests = proxy.to_edges([
        ev("get", "in", "a", "h1"), ev("put", "out", "o", "h2", etag="x"), ev("put", "out", "o", "h3", etag="y"),
        ev("get", "in", "o", "h3", etag="y"),  # reading back its own output is not an input
    ])
    assert [(e.path, e.hash) for e in ins] == [("s3://b/a", "h1")]
    assert [(e.path, e.hash) for e in outs] == [("s3://b/o", "h3")]
    assert digests == {"h1": {"s3.etag": "e"}, "h3": {"s3.etag": "y"}}  # h2 is no edge's hash


def test_deleted_output_is_not_an_output_and_leaves_no_digest():
    ins, outs, digests = proxy.to_edges([ev("put", "out", "t", "h1", vid="v1"), ev("delete", "del", "t", etag=None)])
    assert (ins, outs, digests) == ([], [], {})


def test_range_read_takes_the_blake3_of_a_known_etag():
    ins, _, _ = proxy.to_edges([ev("get", "in", "r", None, size=10, etag="known", rng="bytes=0-9")],
                               etag_lookup={"known": "hk"}.get)
    assert (ins[0].hash, ins[0].size, ins[0].note) == ("hk", 10, "partial read (bytes=0-9)")
    ins, _, _ = proxy.to_edges([ev("get", "in", "r", None, etag="other", rng="bytes=0-9")],
                               etag_lookup={"known": "hk"}.get)
    assert ins[0].hash is None and "blake3 unknown" in ins[0].note


def test_read_events_orders_by_time_and_reports_a_torn_line(tmp_path):
    (tmp_path / "proxy-1-1.s3.jsonl").write_text(json.dumps(ev("get", "in", "late", "h", t=5)) + "\n")
    (tmp_path / "proxy-2-1.s3.jsonl").write_text(json.dumps(ev("get", "in", "early", "h", t=1)) + "\n{\"v\":1")
    events, problems = proxy.read_events(str(tmp_path))
    assert [e["key"] for e in events] == ["early", "late"]
    assert problems == ["the S3 proxy stopped while writing an event"]
