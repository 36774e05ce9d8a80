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

# The wgpu backend's tests run its kernels for real on Mesa's lavapipe (a Vulkan driver on the CPU), which a
# fresh Debian machine lacks: install it when there is no Vulkan loader or no driver manifest. Under CI=true
# the wgpu tests fail without a driver; elsewhere they say loudly that they did not run.
has_vulkan() {
    ldconfig -p 2>/dev/null | grep 'libvulkan\.so\.1' >/dev/null \
        || compgen -G '/usr/lib/*/libvulkan.so.1' >/dev/null || compgen -G '/usr/lib*/libvulkan.so.1' >/dev/null \
        || return 1
    compgen -G '/usr/share/vulkan/icd.d/*.json' >/dev/null || compgen -G '/etc/vulkan/icd.d/*.json' >/dev/null
}
if ! has_vulkan; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mesa-vulkan-drivers libvulkan1
    else
        echo "ci/test.sh: WARNING: no Vulkan driver and no apt as root: the wgpu tests will not run" >&2
        if [ "${CI:-}" = true ]; then
            echo "ci/test.sh: CI=true requires lavapipe (apt-get install mesa-vulkan-drivers libvulkan1)" >&2
            exit 1
        fi
    fi
fi

# Mesa's Vulkan driver loads the Wayland client library, which prints "error: XDG_RUNTIME_DIR is invalid or
# not set in the environment." for every Vulkan instance when the variable is unset (no desktop session, as
# in CI). It only looks for a display; nothing here draws. A private runtime directory keeps the tests quiet
# (the dsv3 binary does the same for itself).
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
    XDG_RUNTIME_DIR=$(mktemp -d)
    export XDG_RUNTIME_DIR
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

# CUDA kernels: every variant compiled by NVRTC for sm_80 and sm_90a (no GPU here), with registers and
# spills; then the fake-libcuda tests get the same NVRTC (under CI=true they require it).
ci/check-cuda-kernels.sh
DSV3_CUDA_LIB_DIR=$(ci/check-cuda-kernels.sh --lib-dir)
export DSV3_CUDA_LIB_DIR

# HIP kernels: every variant through hiprtc (gfx90a) and hipcc (gfx90a, gfx940), with resource usage; it
# installs Debian's ROCm 5.2 compiler and runtime when missing, which the HIP tests need under CI=true.
ci/check-hip-kernels.sh

# The command-line tool end to end: device listing, and the quick conformance set on cpu and wgpu through
# the binary, three times per case (stress: any bitwise difference between the runs fails — races and
# reads of memory a kernel never wrote; lavapipe runs workgroups on several threads). The emulators are
# left out: their fibers run in a fixed order, so repeating proves nothing there (their uninitialised-
# memory checks are their own), and it would cost 2 minutes. Its support matrix must equal the committed
# conformance/SUPPORT-quick.md, device lines aside (they name this machine's CPU and Vulkan driver).
quick_md=$(mktemp)
cargo run --quiet -- devices
cargo run --quiet -- conformance --backend cpu,wgpu --quick --repeat 3 --markdown "$quick_md"
if ! diff <(grep -v '^\* `' conformance/SUPPORT-quick.md) <(grep -v '^\* `' "$quick_md"); then
    echo "ci/test.sh: the quick support matrix differs from conformance/SUPPORT-quick.md; if the change is" \
        "intended: cargo run -- conformance --backend cpu,wgpu --quick --markdown conformance/SUPPORT-quick.md" >&2
    exit 1
fi
rm -f "$quick_md"

# `dsv3 serve` driven by the official openai Python client (installs python3-venv and the package).
ci/openai-client.sh

# Unit, integration and conformance tests (the quick case set runs against the CPU oracle). The full
# DeepSeek-shape set is `#[ignore]`d here (minutes in a release build): README's main command runs it.
log=$(mktemp)
set +e
cargo test --workspace 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line with the totals over every test binary, summed from cargo's own result lines, and the
# number of tests that reported they did not run (`dsv3-test-skip:` lines, dsv3_core::testing): under
# CI=true every such test has already failed, and a nonzero count fails the run as well.
awk '/^test result:/ { for (i = 1; i < NF; i++) {
        if ($(i + 1) == "passed;") p += $i; if ($(i + 1) == "failed;") f += $i; if ($(i + 1) == "ignored;") s += $i } }
     /^dsv3-test-skip:/ { k += 1 }
     /^dsv3-test-cpu-lacks:/ { c += 1 }
     END { printf "tests: %d passed, %d failed, %d ignored (run by their parents or README commands); %d reported a skip; %d not run: this CPU lacks what they test\n", p - c, f, s, k, c }' "$log"
skips=$(grep -c '^dsv3-test-skip:' "$log" || true)
# Tests of instruction-set paths this CPU lacks (AVX-512 VBMI, AVX512-BF16, AMX on an AVX2 machine) cannot
# run on it under any setup; they are listed, never counted as passes (dsv3_core::testing::cpu_lacks).
if grep -q '^dsv3-test-cpu-lacks:' "$log"; then
    echo "ci/test.sh: $(grep -c '^dsv3-test-cpu-lacks:' "$log") tests did NOT run: this CPU lacks the instruction set they test:"
    grep '^dsv3-test-cpu-lacks:' "$log" | sed 's/^dsv3-test-cpu-lacks: /  /'
fi
grep '^dsv3-test-skip:' "$log" || true
rm -f "$log"
if [ "${CI:-}" = true ] && [ "$skips" -gt 0 ]; then
    echo "ci/test.sh: $skips test(s) did not run under CI=true" >&2
    exit 1
fi
exit "$status"
