#!/usr/bin/env bash
# What the tests need on a Debian machine, installed or started only where
# missing: Debian's Rust with its std sources (scripts build for wasm with
# it when rustup has no wasm target), a PostgreSQL server on 127.0.0.1:5432
# that trusts the `postgres` user, openssl, the `standardwebhooks` Python package, and
# Chromium with chromedriver for the console's browser tests.
# `./scripts/test.sh` runs it first; on a machine that has all of it, it
# does nothing. Set SLUICE_TEST_POSTGRES to use another server instead.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

packages=()
# Scripts are built for wasm32-unknown-unknown. rustup's target cannot be
# downloaded here; Debian's rustc-web can build std for wasm from source.
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    [ -x /usr/bin/rustc ] && [ -x /usr/bin/cargo ] && [ -d /usr/lib/rustlib/src ] && command -v rust-lld >/dev/null \
        || packages+=(rustc-web cargo-web rust-web-src rust-web-llvm lld-22)
fi
# The console's tests drive Debian's Chromium headless through chromedriver.
[ -x /usr/bin/chromium ] || packages+=(chromium)
[ -x /usr/bin/chromedriver ] || packages+=(chromium-driver)
# The PostgreSQL backend's tests need a server on 127.0.0.1:5432.
command -v pg_ctlcluster >/dev/null || packages+=(postgresql)
command -v pg_isready >/dev/null || packages+=(postgresql-client)

# The client-certificate tests read PKCS#12 files written by openssl.
command -v openssl >/dev/null || packages+=(openssl)

# The signing tests verify with the `standardwebhooks` library from PyPI,
# independent of sluice's own code.
command -v python3 >/dev/null || packages+=(python3 python3-pip)

if [ ${#packages[@]} -gt 0 ]; then
    echo "installing: ${packages[*]}" >&2
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq "${packages[@]}" >/dev/null
fi

if [ -n "${SLUICE_TEST_POSTGRES:-}" ]; then
    : # the tests use the server named there
elif ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "starting PostgreSQL" >&2
    cluster=$(ls /etc/postgresql | sort -V | tail -1)
    $sudo pg_ctlcluster --skip-systemctl-redirect "$cluster" main start
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi

# The tests connect as `postgres` over TCP without a password. A server
# installed here asks for one (Debian's pg_hba.conf): trust loopback instead.
if [ -z "${SLUICE_TEST_POSTGRES:-}" ] && ! psql -h 127.0.0.1 -U postgres -d postgres -w -Atqc 'SELECT 1' >/dev/null 2>&1; then
    echo "allowing the postgres user on 127.0.0.1 without a password" >&2
    cluster=$(ls /etc/postgresql | sort -V | tail -1)
    hba=/etc/postgresql/$cluster/main/pg_hba.conf
    $sudo sed -i '1i host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust' "$hba"
    $sudo pg_ctlcluster --skip-systemctl-redirect "$cluster" main reload
    sleep 1
    psql -h 127.0.0.1 -U postgres -d postgres -w -Atqc 'SELECT 1' >/dev/null
fi

if ! python3 -c 'import standardwebhooks' 2>/dev/null; then
    echo "installing the standardwebhooks Python package" >&2
    python3 -m pip install --quiet standardwebhooks 2>/dev/null \
        || python3 -m pip install --quiet --break-system-packages standardwebhooks
fi
