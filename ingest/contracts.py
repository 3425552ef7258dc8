"""Data contracts: what metadata each source must send. A document that breaks its source's
contract is rejected with ``contract_violation`` and never reaches the index."""

from __future__ import annotations

from core.errors import IngestError
from core.settings import SourceContract


def check_contract(source: str, metadata: dict[str, object], contracts: dict[str, SourceContract]) -> None:
    contract = contracts.get(source)
    if contract is None:
        return
    problems: list[str] = []
    for name in contract.required:
        if name not in metadata or metadata[name] in (None, ""):
            problems.append(f"missing required field '{name}'")
    for name, kind in contract.types.items():
        if name in metadata and not _is_type(metadata[name], kind):
            problems.append(f"field '{name}' must be {kind}")
    for name, allowed in contract.allowed.items():
        if name in metadata and metadata[name] not in allowed:
            problems.append(f"field '{name}' must be one of {sorted(allowed)}")
    if problems:
        raise IngestError(f"source '{source}' contract: " + "; ".join(problems), code="contract_violation")


def _is_type(value: object, kind: str) -> bool:
    return {"str": isinstance(value, str), "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, (int, float)) and not isinstance(value, bool),
            "bool": isinstance(value, bool), "list": isinstance(value, list)}.get(kind, False)
