"""A complete connector (docs/connectors.md): notes in a folder, each ``<id>.txt`` with its readers
in ``<id>.acl`` (lines ``user alice``, ``group staff``, ``deny user bob``). Ship it in a package
of your own with ``[project.entry-points."clearance.connectors"] notes = "mypkg.notes:NotesConnector"``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

from ingest.connectors.contract import Batch, ConnectorDocument, PermissionChange, SourceAcl, SourceIdentity


class NotesConnector:
    namespace = "notes"  # identity map rules name this namespace

    def __init__(self, name: str, config: Mapping[str, object]) -> None:
        self.name, self.root = name, Path(str(config["root"]))  # validate config here: errors fail early

    def _acl(self, note: Path) -> SourceAcl:
        allow, deny = set(), set()
        acl_file = note.with_suffix(".acl")
        for line in filter(str.strip, acl_file.read_text().splitlines() if acl_file.exists() else []):  # none: private
            *neg, kind, who = line.split()
            (deny if neg else allow).add(SourceIdentity("group" if kind == "group" else "user", who, self.namespace))
        return SourceAcl(frozenset(allow), frozenset(deny))

    def documents(self, since: str | None) -> Iterator[Batch[ConnectorDocument]]:
        seen: dict[str, int] = json.loads(since) if since else {}
        state, items = {}, []
        for note in sorted(self.root.glob("*.txt")):
            state[note.stem] = note.stat().st_mtime_ns
            if seen.get(note.stem) != state[note.stem]:
                items.append(ConnectorDocument(
                    doc_id=note.stem, filename=note.name, content=note.read_bytes(), acl=self._acl(note),
                    modified_at=datetime.fromtimestamp(note.stat().st_mtime, UTC), uri=note.as_uri(), title=note.stem))
        yield Batch(items, json.dumps(state))  # the checkpoint holds once every item is applied

    def permissions(self, since: str | None) -> Iterator[Batch[PermissionChange]]:
        seen: dict[str, str] = json.loads(since) if since else {}
        state, items = {}, []
        for note in sorted(self.root.glob("*.txt")):
            acl = note.with_suffix(".acl")
            state[note.stem] = hashlib.sha256(acl.read_bytes() if acl.exists() else b"").hexdigest()
            if seen.get(note.stem) != state[note.stem]:
                items.append(PermissionChange(note.stem, self._acl(note)))  # the whole ACL, never content
        yield Batch(items, json.dumps(state))

    def listing(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.txt"))

    def close(self) -> None:
        pass
