#!/usr/bin/env bash
# Build pgvector from Debian's source package against the PostgreSQL on this machine (the peer of
# bench/peers/pgvector.py). Not part of `make test`. Needs root (apt) and Debian's mirrors.
#   bash bench/peers/build_pgvector.sh          # then: psql -c 'CREATE EXTENSION vector' in the bench DB
# Bookworm has no pgvector package; trixie's source package (0.8.x, with hnsw.iterative_scan)
# builds against bookworm's PostgreSQL server headers.
set -euo pipefail
PG_CONFIG=${PG_CONFIG:-$(ls -d /usr/lib/postgresql/*/bin/pg_config | sort -V | tail -1)}
MAJOR=$("$PG_CONFIG" --version | sed -E 's/[^0-9]*([0-9]+).*/\1/')
SRC=/etc/apt/sources.list.d/clearance-pgvector-src.sources
if ! apt-cache showsrc pgvector >/dev/null 2>&1 || [ -z "$(apt-cache showsrc pgvector 2>/dev/null)" ]; then
  cat > "$SRC" <<SOURCES
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  apt-get update -qq
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dpkg-dev "postgresql-server-dev-$MAJOR" >/dev/null
WORK=$(mktemp -d)
cd "$WORK"
apt-get source -qq pgvector >/dev/null
cd pgvector-*/
make -s PG_CONFIG="$PG_CONFIG" >/dev/null
make -s PG_CONFIG="$PG_CONFIG" install >/dev/null
echo "pgvector $(grep default_version vector.control | cut -d"'" -f2) installed for PostgreSQL $MAJOR ($PG_CONFIG)"
