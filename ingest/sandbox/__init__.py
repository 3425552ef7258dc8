"""Parse untrusted documents in separate, resource-limited, network-isolated worker processes.

Invariants (each module states its own part):
- the calling process never parses; raw bytes and JSON cross the boundary, never pickle
  (``wire``);
- a call returns elements or raises a ``ClearanceError`` with a stable code; it never waits
  longer than ``parse_timeout_s`` for a parse; a worker that times out, dies, hits its memory
  cap or serves ``parse_worker_max_jobs`` parses is replaced (``pool``);
- parser processes cannot reach the network: a network namespace of their own, else a seccomp
  filter refusing inet sockets, else the sandbox refuses to start unless
  ``ingest.allow_unisolated_parsing`` is set (``limits``); Python-level network calls are also
  refused and counted; workers never import torch and die with the process that forked them
  (``child``).

Shape: each pool starts one *template* process that isolates itself, imports every parser and
loads the spaCy model (~5 s, once), never parses a document, and forks a worker whenever one is
needed. A fresh worker therefore costs a fork (milliseconds), not the imports, so a stream of
files that kill their workers cannot turn restarts into a denial of service, and workers share
the loaded model copy-on-write. The template is single-threaded when it forks (checked at
start-up).

Modules by process side: ``pool`` (the caller), ``child`` (template and workers), ``limits``
(operating-system limits: namespaces, seccomp, rlimits), ``wire`` (the messages between them).
"""

from ingest.sandbox.limits import Isolation
from ingest.sandbox.pool import ParserPool, available_isolation, parse_isolated, shared_pool, shutdown

__all__ = ["Isolation", "ParserPool", "available_isolation", "parse_isolated", "shared_pool", "shutdown"]
