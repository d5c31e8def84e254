#!/usr/bin/env bash
# The whole test suite: the scripts built from source, every test on the
# embedded SQLite backend (the cluster test runs on PostgreSQL regardless),
# then the end-to-end and fault suites again with every engine on PostgreSQL.
# First `scripts/setup.sh` installs what is missing (the wasm toolchain,
# PostgreSQL at 127.0.0.1:5432 trusting user postgres, a Python library);
# SLUICE_TEST_POSTGRES may name another server that allows CREATE DATABASE
# instead. The PostgreSQL tests fail, never skip, without one.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
./scripts/build.sh
cargo test --workspace
# Quoted: Cargo expands the glob over the package's test targets.
SLUICE_TEST_BACKEND=postgres cargo test -p sluice-tests --test 'e2e_*' --test 'faults_*'
