#!/usr/bin/env bash
# Installs the local stack's tools under .devstack/ (gitignored): PostgreSQL 16 + pgvector (pgserver
# wheel) with pgTAP, the Letta server 0.16.8 in its own venv plus its alembic migrations, and Deno.
# Idempotent: each step leaves a marker naming its pinned version (or its lock file's content), and a rerun skips
# finished steps.
# Run from anywhere: ./devstack/install.sh
set -euo pipefail

LETTA_VERSION=0.16.8
# chromium: the browser the web client's test drives (Playwright with executable_path, never `playwright install`).
APT_PACKAGES=(postgresql-15 postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl postgresql-client-15 chromium)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DS=.devstack
MARKERS=$DS/markers
PY=${PYTHON:-python3.11}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
mkdir -p "$MARKERS"

step() { printf '==> %s\n' "$*"; }
done_marker() { [[ -f "$MARKERS/$1" ]]; }
mark() { touch "$MARKERS/$1"; }
SUDO=()
if [[ $EUID -ne 0 ]]; then SUDO=(sudo); fi

# --- apt: Debian's PostgreSQL 15 gives us the postgres OS user, psql, pgTAP and pg_prove ----------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    [[ $status == "install ok installed" ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
    step "apt-get install ${missing[*]}"
    # `env` because sudo drops the caller's environment.
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
else
    step "apt packages present"
fi

# --- pgserver: a relocatable PostgreSQL 16.2 build that includes pgvector (Debian has no pgvector) --
# The wheel's version and hashes are in devstack/pgserver.lock (`make lock`); the marker names the lock's content.
PG_ROOT=$DS/pgserver
PG_BIN=$PG_ROOT/pgserver/pginstall/bin
PG_LOCK=devstack/pgserver.lock
pg_lock_sum="$(sha256sum "$PG_LOCK" | cut -c1-16)"
if ! done_marker "pgserver-$pg_lock_sum"; then
    step "pgserver <- $PG_LOCK -> $PG_ROOT"
    rm -rf "$PG_ROOT"
    "$PY" -m pip install -qq --no-deps --require-hashes --target "$PG_ROOT" -r "$PG_LOCK"
    chmod +x "$PG_BIN"/*
    # pgTAP is pure SQL, so Debian's PG15 extension files work in this PG16 installation.
    ext_dir="$("$PG_BIN/pg_config" --sharedir)/extension"
    cp /usr/share/postgresql/15/extension/pgtap* "$ext_dir/"
    # The server runs as the postgres OS user: it must read/execute the whole installation.
    chmod -R a+rX "$PG_ROOT"
    mark "pgserver-$pg_lock_sum"
else
    step "pgserver ($PG_LOCK) present"
fi
chmod a+rx "$DS"

# --- Letta server: own venv, because it pins old pydantic/fastapi; installed from a working freeze --
# The lock is that freeze with hashes (`make lock`). Its marker names the checksum of the locks, so an
# edited lock is installed over the existing venv at the next run.
LETTA_VENV=$DS/letta-venv
LETTA_LOCK=devstack/letta-server-$LETTA_VERSION.lock
letta_lock_sum="$(cat requirements/bootstrap.lock "$LETTA_LOCK" | sha256sum | cut -c1-16)"
if ! done_marker "letta-venv-$LETTA_VERSION"; then
    step "Letta server $LETTA_VERSION -> $LETTA_VENV (takes a few minutes)"
    rm -rf "$LETTA_VENV"
    "$PY" -m venv "$LETTA_VENV"
fi
if ! done_marker "letta-lock-$letta_lock_sum"; then
    step "Letta venv <- requirements/bootstrap.lock $LETTA_LOCK"
    # Pinned pip first: the image's pip 23 crashes resolving this set.
    "$LETTA_VENV/bin/pip" install -qq --require-hashes -r requirements/bootstrap.lock
    "$LETTA_VENV/bin/pip" install -qq --require-hashes -r "$LETTA_LOCK"
    installed="$("$LETTA_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("letta"))')"
    [[ "$installed" == "$LETTA_VERSION" ]] || { echo "letta $installed installed, want $LETTA_VERSION" >&2; exit 1; }
    rm -f "$MARKERS"/letta-lock-*
    mark "letta-lock-$letta_lock_sum"
    mark "letta-venv-$LETTA_VERSION"
else
    step "Letta venv $LETTA_VERSION present"
fi

# --- Letta's alembic migrations ship only in the sdist (the server never creates its own tables) ----
ALEMBIC_DIR=$DS/letta-alembic
if ! done_marker "letta-alembic-$LETTA_VERSION"; then
    step "Letta $LETTA_VERSION alembic migrations -> $ALEMBIC_DIR"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    # The sdist, checked against letta's hashes in the lock.
    awk '/^letta==/ { keep = 1; print; next } /^[^ ]/ { keep = 0 } keep' "$LETTA_LOCK" >"$tmp/letta.txt"
    "$LETTA_VENV/bin/pip" download -qq --no-deps --no-binary :all: --require-hashes -d "$tmp" -r "$tmp/letta.txt"
    tar -xzf "$tmp"/letta-"$LETTA_VERSION".tar.gz -C "$tmp" \
        "letta-$LETTA_VERSION/alembic" "letta-$LETTA_VERSION/alembic.ini"
    rm -rf "$ALEMBIC_DIR"
    mkdir -p "$ALEMBIC_DIR"
    mv "$tmp/letta-$LETTA_VERSION/alembic" "$tmp/letta-$LETTA_VERSION/alembic.ini" "$ALEMBIC_DIR/"
    mark "letta-alembic-$LETTA_VERSION"
else
    step "Letta alembic $LETTA_VERSION present"
fi

# --- Deno (for supabase/functions tests): the npm package carries the native binary ---------------
# Its version and integrity hashes are in devstack/deno/package-lock.json; the marker names the lock's content.
DENO=$DS/node/node_modules/.bin/deno
deno_lock_sum="$(sha256sum devstack/deno/package-lock.json | cut -c1-16)"
if ! done_marker "deno-$deno_lock_sum" || [[ ! -x $DENO ]]; then
    step "deno <- devstack/deno/package-lock.json -> $DS/node"
    mkdir -p "$DS/node"
    cp devstack/deno/package.json devstack/deno/package-lock.json "$DS/node/"
    npm ci -s --no-audit --no-fund --prefix "$DS/node"
    "$DENO" --version | head -1
    mark "deno-$deno_lock_sum"
else
    step "deno (devstack/deno/package-lock.json) present"
fi

# --- npm dependencies of the Edge Functions and of the Vercel AI SDK client test (tests/e2e/ai_sdk), cached
# now so `deno serve`/`deno test` never download at run time ---------------------------------------------
for config in supabase/functions/*/deno.json tests/e2e/ai_sdk/deno.json; do
    dir=$(dirname "$config")
    step "deno cache for $dir"
    DENO_DIR="$DS/deno-cache" DENO_NO_UPDATE_CHECK=1 "$DENO" install -q --frozen --config "$config" \
        --entrypoint "$dir"/*.ts
done

# --- The reference web client (examples/web): its pinned npm packages, exactly as package-lock.json has them (Vite,
# React, the AI SDK, supabase-js, and the type generators: openapi-typescript, the Supabase CLI) -----------------
web_lock_sum="$(sha256sum examples/web/package-lock.json | cut -c1-16)"
if ! done_marker "web-npm-$web_lock_sum" || [[ ! -d examples/web/node_modules ]]; then
    step "npm ci in examples/web"
    # `npm install --no-save`, not `npm ci`: the lock has no entries for the Supabase CLI's binaries of other
    # platforms (optional packages the registry here does not carry), which `npm ci` refuses; install takes
    # the locked versions and checks their integrity just the same, and leaves the lock as it is.
    (cd examples/web && npm install -s --no-save --no-audit --no-fund)
    rm -f "$MARKERS"/web-npm-*
    mark "web-npm-$web_lock_sum"
else
    step "examples/web npm packages present"
fi

step "devstack ready in $DS"
