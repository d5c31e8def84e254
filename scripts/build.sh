#!/usr/bin/env bash
# Builds every script under scripts/ from source into a wasm component:
#   target/scripts/<name>.wasm
# Uses rustup's wasm32-unknown-unknown target when installed, otherwise
# Debian's rustc-web with `-Z build-std` (see the toolchain note in README).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

scripts=()
for dir in scripts/*/; do
    [ -f "$dir/Cargo.toml" ] && scripts+=("$(basename "$dir")")
done

out="$root/target/scripts"
wasm_target_dir="$root/target/wasm"
mkdir -p "$out"

pkgs=()
for s in "${scripts[@]}"; do pkgs+=(-p "$s"); done

if rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    echo "building ${#scripts[@]} scripts with rustup's wasm32 target" >&2
    cargo build --profile wasm-release --target wasm32-unknown-unknown \
        --target-dir "$wasm_target_dir" "${pkgs[@]}"
elif [ -x /usr/bin/cargo ] && [ -x /usr/bin/rustc ] && [ -d /usr/lib/rustlib/src ]; then
    echo "building ${#scripts[@]} scripts with Debian's rustc and build-std" >&2
    # Debian's cargo and rustc, not rustup's first-on-PATH proxies.
    env -u RUSTUP_TOOLCHAIN RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
        /usr/bin/cargo build --profile wasm-release --target wasm32-unknown-unknown \
        --target-dir "$wasm_target_dir" -Z build-std=std,panic_abort "${pkgs[@]}"
else
    cat >&2 <<'MSG'
error: no toolchain can build wasm32-unknown-unknown here. Either
  rustup target add wasm32-unknown-unknown
or (Debian, where rustup cannot download targets)
  apt-get install -y rustc-web cargo-web rust-web-src rust-web-llvm lld-22
MSG
    exit 1
fi

# Core modules carry the component-type section; make them components.
# SLUICE_BIN names a sluice binary already built (the test command passes
# the one its test build made, so the engine is not built twice with two
# feature sets); otherwise it is built here. It lands in CARGO_TARGET_DIR
# when one is set (a shared target dir).
sluice="${SLUICE_BIN:-}"
if [ -z "$sluice" ]; then
    cargo build --quiet -p sluice --bin sluice
    sluice="${CARGO_TARGET_DIR:-$root/target}/debug/sluice"
fi
for s in "${scripts[@]}"; do
    core="$wasm_target_dir/wasm32-unknown-unknown/wasm-release/${s//-/_}.wasm"
    "$sluice" script componentize "$core" -o "$out/$s.wasm"
done
ls -l "$out" >&2
