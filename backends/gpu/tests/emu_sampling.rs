//! Sampling's distribution on the host emulator at both warp widths: draws at T = 0.7 / top-p 0.9 against
//! the exact nucleus distribution (chi-square p ≥ 1e-4), never a token outside it. 1,000 draws per width,
//! not the 20,000 of the other backends: the emulator runs each GPU thread as a fiber, one 256-thread
//! block per draw, and 20,000 draws took 270 s per width in the dev profile. Its sample ids are also
//! compared one by one with the oracle's race in the quick set (`emu_select.rs`).

use dsv3_backend_gpu::emulator::EmulatorBackend;
use dsv3_conformance::sampling_stats::check;
use dsv3_core::Backend;

const DRAWS: usize = 1_000;

#[test]
fn sampling_draws_the_nucleus_distribution_at_warp_32_and_64() {
    for warp in [32, 64] {
        let device = EmulatorBackend::new(warp).open(0).unwrap();
        let stats = check(&device, DRAWS).expect("sampling runs");
        assert!(stats.passed(), "warp {warp}: {stats:?}");
    }
}
