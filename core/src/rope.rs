//! Rotary position embedding frequencies (with YaRN) and the attention softmax scale. Computed once on
//! the host, identically for every backend; kernels receive the frequency table.

/// YaRN context extension as DeepSeek configures it (`rope_scaling` with `type: yarn`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Yarn {
    pub factor: f64,
    pub original_max_position: f64,
    pub beta_fast: f64,
    pub beta_slow: f64,
    /// `mscale_all_dim`: scales the attention logits by m², m = 0.1·mscale_all_dim·ln(factor) + 1.
    pub mscale_all_dim: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeParams {
    /// Rotated dimensions (qk_rope_head_dim, 64 in V3); even.
    pub dim: usize,
    pub theta: f64,
    pub yarn: Option<Yarn>,
}

impl RopeParams {
    /// `f'_i` for i in 0..dim/2: base `θ^(−2i/dim)`, blended towards `f_i / factor` by YaRN's linear ramp
    /// between the correction dimensions of `beta_fast` and `beta_slow`. Computed in f64, rounded to f32
    /// once (the references compute it in f32; the difference is below 1 f32 ulp of each frequency).
    pub fn inv_freqs(&self) -> Vec<f32> {
        let half = self.dim / 2;
        let d = self.dim as f64;
        let base: Vec<f64> = (0..half).map(|i| self.theta.powf(-((2 * i) as f64) / d)).collect();
        let Some(y) = self.yarn else {
            return base.iter().map(|&f| f as f32).collect();
        };
        let correction_dim = |rotations: f64| {
            d * (y.original_max_position / (rotations * 2.0 * std::f64::consts::PI)).ln()
                / (2.0 * self.theta.ln())
        };
        let low = correction_dim(y.beta_fast).floor().max(0.0);
        let mut high = correction_dim(y.beta_slow).ceil().min(d - 1.0);
        if low == high {
            high += 0.001;
        }
        base.iter()
            .enumerate()
            .map(|(i, &f)| {
                let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                let smooth = 1.0 - ramp;
                (f / y.factor * (1.0 - smooth) + f * smooth) as f32
            })
            .collect()
    }
}

/// The attention logit scale: `head_dim^−½`, times m² with YaRN, m = 0.1·mscale_all_dim·ln(factor) + 1.
pub fn softmax_scale(qk_head_dim: usize, yarn: Option<&Yarn>) -> f32 {
    let mut scale = (qk_head_dim as f64).powf(-0.5);
    if let Some(y) = yarn {
        if y.mscale_all_dim != 0.0 && y.factor > 1.0 {
            let m = 0.1 * y.mscale_all_dim * y.factor.ln() + 1.0;
            scale *= m * m;
        }
    }
    scale as f32
}
