//! Benchmarks live in `benches/`; this crate holds what several of them share.

/// Test data for the benches: xorshift64, deterministic per seed (the figures do not depend on the values,
/// only on their being finite and varied).
pub struct Rng(pub u64);

impl Rng {
    pub fn u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        (self.u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}
