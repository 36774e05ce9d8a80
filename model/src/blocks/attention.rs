//! Multi-head latent attention in the absorbed form, for prefill and decode alike, with the layer's two
//! norms: the block that owns a layer's residual stream and its latent cache (`layers.N.attn`).
//!
//! The cache holds, per token, the normalized latent `c_kv` and the rotated shared rope key
//! (`kv_lora_rank + qk_rope_head_dim` values). RoPE rotates the checkpoint's interleaved pairs (DeepSeek's
//! reference convention) for both the queries and the cached key.

use dsv3_core::ops::attention::{CacheAppend, MlaAttention};
use dsv3_core::ops::elementwise::{RmsNorm, Rope};
use dsv3_core::ops::gemm::{BatchedGemm, Weights};
use dsv3_core::{DType, Op, Result, Tensor};

use crate::config::ModelConfig;
use crate::exec::{view, Exec, Loader, Step};
use crate::placement::Part;

enum QProj {
    Lora(Box<(Weights, Tensor, Weights)>),
    Direct(Weights),
}

pub(crate) struct Attention {
    /// The exec this block, the layer's residual stream and its cache live on.
    pub exec: usize,
    attn_norm: Tensor,
    ffn_norm: Tensor,
    q: QProj,
    kv_a: Weights,
    kv_norm: Tensor,
    /// W_UKᵀ per head, `[H, Dc, dn]`: q̃_h = q_nope_h · W_UK[h].
    w_uk_t: Tensor,
    /// W_UV per head, `[H, dv, Dc]`: o_h = õ_h · W_UV[h]ᵀ.
    w_uv: Tensor,
    o: Weights,
}

impl Attention {
    pub fn load(cfg: &ModelConfig, ld: &mut Loader, layer: usize, act: DType) -> Result<Attention> {
        let exec = ld.part(Part::Attn(layer))?;
        let up = &mut ld.up;
        let p = format!("model.layers.{layer}.");
        let a = format!("{p}self_attn.");
        let q = match cfg.q_lora_rank {
            Some(_) => QProj::Lora(Box::new((
                up.linear(&format!("{a}q_a_proj.weight"))?,
                up.float(&format!("{a}q_a_layernorm.weight"))?,
                up.linear(&format!("{a}q_b_proj.weight"))?,
            ))),
            None => QProj::Direct(up.linear(&format!("{a}q_proj.weight"))?),
        };
        let (w_uk_t, w_uv) = up.absorbed_kv_b(
            &format!("{a}kv_b_proj.weight"),
            cfg.num_attention_heads,
            cfg.qk_nope_head_dim,
            cfg.v_head_dim,
            act,
        )?;
        Ok(Attention {
            exec,
            attn_norm: up.float(&format!("{p}input_layernorm.weight"))?,
            ffn_norm: up.float(&format!("{p}post_attention_layernorm.weight"))?,
            q,
            kv_a: up.linear(&format!("{a}kv_a_proj_with_mqa.weight"))?,
            kv_norm: up.float(&format!("{a}kv_a_layernorm.weight"))?,
            w_uk_t,
            w_uv,
            o: up.linear(&format!("{a}o_proj.weight"))?,
        })
    }

    /// `h + attention(norm(h))` and its feed-forward input `ffn_norm(·)`, both on this block's exec.
    pub fn forward(
        &self,
        s: &Step,
        cfg: &ModelConfig,
        cache: &Tensor,
        h: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let e = s.exec(self.exec);
        let x = e.rms_norm(h, &self.attn_norm)?;
        let h = e.add(h, &self.attend(s, cfg, cache, &x)?)?;
        let x = e.rms_norm(&h, &self.ffn_norm)?;
        Ok((h, x))
    }

    fn attend(&self, s: &Step, cfg: &ModelConfig, cache: &Tensor, x: &Tensor) -> Result<Tensor> {
        let e = s.exec(self.exec);
        let inputs = &s.inputs[self.exec];
        let act = e.act;
        let (rows, heads) = (s.rows, cfg.num_attention_heads);
        let (dn, dr, dc) = (cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.kv_lora_rank);
        let qk = dn + dr;
        let q = match &self.q {
            QProj::Lora(lora) => {
                let (a, norm, b) = lora.as_ref();
                e.linear(&e.rms_norm(&e.linear(x, a, act)?, norm)?, b, act)?
            }
            QProj::Direct(w) => e.linear(x, w, act)?,
        };
        // The new tokens' latents (c_kv normalized, k_pe rotated) for every sequence at once, then appended
        // to the cache at the positions the device reads from kv_lens: three launches for any batch, and
        // nothing in them depends on where the sequences are (a captured step replays anywhere).
        let kv = e.linear(x, &self.kv_a, act)?;
        let width = dc + dr;
        let latents = e.tmp(&[rows, width], act)?;
        let norm = RmsNorm {
            x: view(&kv, 0, &[rows, dc], &[width, 1]),
            weight: self.kv_norm.clone(),
            eps: e.eps,
            out: view(&latents, 0, &[rows, dc], &[width, 1]),
        };
        e.launch(Op::RmsNorm(norm))?;
        let rope = Rope {
            x: view(&kv, dc, &[rows, 1, dr], &[width, dr, 1]),
            positions: inputs.positions.clone(),
            params: cfg.rope(),
            out: view(&latents, dc, &[rows, 1, dr], &[width, dr, 1]),
        };
        e.launch(Op::Rope(rope))?;
        let append = CacheAppend {
            rows: latents.reshape(&[s.batch, s.t, width])?,
            kv_lens: inputs.kv_lens.clone(),
            cache: cache.clone(),
            block_table: Some(inputs.block_table.clone()),
        };
        e.launch(Op::CacheAppend(append))?;
        let q_pe = e.tmp(&[rows, heads, dr], act)?;
        let rope = Rope {
            x: view(&q, dn, &[rows, heads, dr], &[heads * qk, qk, 1]),
            positions: inputs.positions.clone(),
            params: cfg.rope(),
            out: q_pe.clone(),
        };
        e.launch(Op::Rope(rope))?;
        // Absorb W_UK into the query, one head at a time: q̃_h = q_nope_h · W_UK[h].
        let q_latent = per_head(e, &q, qk, dn, &self.w_uk_t)?;
        let (b, t) = (s.batch, s.t);
        let latent_out = e.tmp(&[b, t, heads, dc], act)?;
        let mla = MlaAttention {
            q_latent: q_latent.reshape(&[b, t, heads, dc])?,
            q_pe: q_pe.reshape(&[b, t, heads, dr])?,
            kv_cache: cache.clone(),
            block_table: Some(inputs.block_table.clone()),
            kv_lens: inputs.kv_lens.clone(),
            softmax_scale: cfg.softmax_scale(),
            causal: true,
            out: latent_out.clone(),
        };
        e.launch(Op::MlaAttention(mla))?;
        // Back out of the latent space per head, o_h = õ_h · W_UV[h]ᵀ, then the output projection.
        let heads_out = per_head(e, &latent_out.reshape(&[rows, heads * dc])?, dc, dc, &self.w_uv)?;
        e.linear(&heads_out, &self.o, act)
    }
}

/// Every head's product in one launch: `out[:, h] = x[:, h, 0..k] · w[h]ᵀ`, where each row of `x` holds
/// the heads' operands `stride` values apart and `w` is `[H, N, K]`; `out` is `[rows, H·N]`.
fn per_head(e: &Exec, x: &Tensor, stride: usize, k: usize, w: &Tensor) -> Result<Tensor> {
    let (heads, n) = (w.shape[0], w.shape[1]);
    let rows = x.shape[0];
    let out = e.tmp(&[rows, heads * n], e.act)?;
    let gemm = BatchedGemm {
        a: view(x, 0, &[heads, rows, k], &[stride, heads * stride, 1]),
        b: w.clone(),
        c: view(&out, 0, &[heads, rows, n], &[n, heads * n, 1]),
    };
    e.launch(Op::BatchedGemm(gemm))?;
    Ok(out)
}
