"""Versioned labels on sessions (`dag`), jobs and artifacts: `roar label`.

Owns what a label target names (`target`: `current` or a session prefix, a job
reference, an artifact path or hash), how `KEY=VALUE` words become a patch
(`KEY=` deletes), and copying the latest labels of one entity onto another (a
new version of the destination, the copied keys overriding its own).

What it must not do: print or format (the CLI prints the JSON documents it
returns), or write anything but labels.
"""

from __future__ import annotations

from roar_nb.errors import UsageError

ENTITIES = ("dag", "job", "artifact")
CP_USAGE = ("usage: roar label cp ENTITY TARGET DEST_ENTITY DEST_TARGET"
            " (e.g. roar label cp job @2 artifact model.pt)")


def target(project, entity: str, ref: str) -> str:
    """The id a label on `entity` attaches to: a session id, a job id or a blake3 hash."""
    from roar_nb.resolve import resolve_artifact, resolve_job

    if entity == "dag":
        if ref == "current":
            return project.store.active_session().id
        return project.store.find_session(ref).id
    if entity == "job":
        return resolve_job(project, ref).id
    return resolve_artifact(project, ref)


def parse_pairs(pairs: list[str]) -> dict:
    """`KEY=VALUE` words as a patch; `KEY=` deletes the key (None)."""
    patch = {}
    for kv in pairs:
        k, eq, v = kv.partition("=")
        if not eq or not k:
            raise UsageError(f"labels are KEY=VALUE (KEY= deletes), got {kv!r}")
        patch[k] = v if v != "" else None
    return patch


def set_labels(project, entity: str, ref: str, pairs: list[str]) -> dict:
    """Patch the labels of `entity` `ref`; returns the new document."""
    return project.store.label_patch(entity, target(project, entity, ref), parse_pairs(pairs))


def copy(project, entity: str, ref: str, dest_entity: str, dest_ref: str) -> dict:
    """Copy the latest labels of one entity onto another; returns the destination's new document."""
    src = target(project, entity, ref)
    if dest_entity not in ENTITIES:
        raise UsageError(CP_USAGE)
    dest = target(project, dest_entity, dest_ref)
    hist = project.store.label_history(entity, src)
    if not hist or not hist[-1].doc:
        raise UsageError(f"no labels on {entity} {ref} to copy")
    return project.store.label_patch(dest_entity, dest, hist[-1].doc)


def history(project, entity: str, ref: str) -> list:
    """Every version (`model.LabelVersion`) of the labels of `entity` `ref`, oldest first."""
    return project.store.label_history(entity, target(project, entity, ref))
