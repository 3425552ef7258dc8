"""Data contracts: what metadata each source must send. A document that breaks its source's
contract is rejected with ``contract_violation`` and never reaches the index."""

from __future__ import annotations

from datetime import UTC

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
            "bool": isinstance(value, bool), "list": isinstance(value, list),
            "date": isinstance(value, str) and iso_timestamp(value) is not None}.get(kind, False)


def iso_timestamp(value: str) -> float | None:
    """Seconds since the epoch of an ISO 8601 date or date-time (naive: UTC), or None."""
    from datetime import datetime

    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return (dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt).timestamp()


def declared_metadata(contracts: dict[str, SourceContract]) -> dict[str, str]:
    """Every metadata field some source contract declares, with its declared type (``str`` when a
    contract only requires or enumerates it): the fields search may filter on."""
    out: dict[str, str] = {}
    for contract in contracts.values():
        for name in [*contract.required, *contract.allowed]:
            out.setdefault(name, contract.types.get(name, "str"))
        for name, kind in contract.types.items():
            out.setdefault(name, kind)
    return out


def typed_metadata(source: str, metadata: dict[str, str], contracts: dict[str, SourceContract]) -> dict[str, object]:
    """A document's metadata as the index stores it: declared numbers as numbers (so ranges work),
    booleans as ``"true"``/``"false"``, lists as lists; anything else as sent."""
    import ast

    from retrieval.scope_filter import bool_text

    contract = contracts.get(source)
    types = contract.types if contract is not None else {}
    out: dict[str, object] = {}
    for name, value in metadata.items():
        kind = types.get(name, "str")
        try:
            if kind == "int":
                out[name] = int(value)
            elif kind == "float":
                out[name] = float(value)
            elif kind == "bool":
                out[name] = bool_text(str(value).strip().lower() in ("true", "1"))
            elif kind == "date":  # stored as epoch seconds, so date ranges are numeric ranges
                ts = iso_timestamp(str(value))
                out[name] = ts if ts is not None else value
            elif kind == "list":
                parsed = ast.literal_eval(value) if isinstance(value, str) else value
                out[name] = [str(v) for v in parsed] if isinstance(parsed, (list, tuple)) else [str(value)]
            else:
                out[name] = value
        except (ValueError, SyntaxError):
            out[name] = value
    return out
