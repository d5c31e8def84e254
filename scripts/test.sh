#!/usr/bin/env bash
# The whole test suite: the scripts built from source, every test on the
# embedded SQLite backend (the cluster test runs on PostgreSQL regardless),
# then the end-to-end and fault suites again with every engine on PostgreSQL.
# Needs a PostgreSQL server at 127.0.0.1:5432 (user postgres, trust
# authentication) or SLUICE_TEST_POSTGRES naming one that allows
# CREATE DATABASE; the PostgreSQL tests fail, never skip, without one.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/build.sh
cargo test --workspace
# Quoted: Cargo expands the glob over the package's test targets.
SLUICE_TEST_BACKEND=postgres cargo test -p sluice-tests --test 'e2e_*' --test 'faults_*'
