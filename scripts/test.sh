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
# Every build below selects the whole workspace, so all of them share one
# set of resolved features and nothing is compiled twice (a `-p` selection
# resolves features apart and rebuilds the engine and every test binary).
cargo test --workspace --no-run
SLUICE_BIN="${CARGO_TARGET_DIR:-target}/debug/sluice" ./scripts/build.sh
cargo test --workspace
# Quoted: Cargo expands the glob over the workspace's test targets.
SLUICE_TEST_BACKEND=postgres cargo test --workspace --test 'e2e_*' --test 'faults_*'
