#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine (root, apt) or a developer's. Installs what the tests
# need, then runs them. Dev profile only: the compute crates are optimised in it (see Cargo.toml), and a
# release build would double CI time for no extra coverage.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "ci/test.sh: cargo not found: install a Rust toolchain (rustup) first" >&2
    exit 1
fi

# Lint gates: formatting and clippy warnings fail the run. The components come with the toolchain
# image; where one is missing (it cannot be fetched here), say so loudly rather than pretend.
if cargo fmt --version >/dev/null 2>&1; then
    cargo fmt --all -- --check
else
    echo "ci/test.sh: WARNING: rustfmt is not installed: formatting NOT checked" >&2
fi
if cargo clippy --version >/dev/null 2>&1; then
    cargo clippy --workspace --all-targets --quiet -- -D warnings
else
    echo "ci/test.sh: WARNING: clippy is not installed: lints NOT checked" >&2
fi

# The command-line tool end to end: device listing and the quick conformance set through the binary.
cargo run --quiet -- devices
cargo run --quiet -- conformance --backend cpu --quick

# Unit, integration and conformance tests (the quick case set runs against the CPU oracle).
cargo test --workspace
