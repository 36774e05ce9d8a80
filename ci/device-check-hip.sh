#!/usr/bin/env bash
# The one-call check for a machine with an AMD GPU (made for one MI300X with ROCm installed, no internet and
# no Rust toolchain): ci/device-check.sh with the HIP backend — devices, the full conformance suite, the
# golden fixtures, GEMM / MLA bench rows next to hipBLASLt through PyTorch — into
# benches/results/<date>-hip-device-check.md (or $OUT). Never run on AMD hardware by its authors yet: please
# send the report back.
#
#   ci/device-check-hip.sh [--step S | --steps S,S...] [--force] [BINARY]   (steps and resuming: device-check.sh)
exec "$(dirname "$0")/device-check.sh" --backend hip "$@"
