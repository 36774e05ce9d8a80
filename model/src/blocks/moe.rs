//! The feed-forward half of a layer: a dense MLP (`layers.N.mlp`), or a mixture of experts whose router
//! (`layers.N.router`), shared experts (`layers.N.shared`) and routed experts (`layers.N.experts`) may each
//! live on a different device — routed experts in host RAM beside attention on a GPU is how DeepSeek-V3
//! runs on one GPU. The normalized hidden state comes from the layer's attention device and the output
//! goes back there; only hidden states and the routing (ids, weights) cross devices.

use dsv3_core::ops::moe::{MoeCombine, MoeDispatch, MoeRoute, TopkMethod};
use dsv3_core::{DType, Op, Result, Tensor};

use crate::config::{ModelConfig, Moe};
use crate::exec::{Loader, Mlp, Step};
use crate::placement::Part;
use crate::weights::Uploader;

pub(crate) enum Ffn {
    Dense { exec: usize, mlp: Box<Mlp> },
    Moe(Box<MoeBlock>),
}

pub(crate) struct MoeBlock {
    config: Moe,
    router_exec: usize,
    router: dsv3_core::ops::gemm::Weights,
    bias: Option<Tensor>,
    shared: Option<(usize, Mlp)>,
    experts_exec: usize,
    /// Routed experts stacked `[E, N, K]`.
    experts: Mlp,
}

fn load_mlp(up: &mut Uploader, prefix: &str) -> Result<Mlp> {
    Ok(Mlp {
        gate: up.linear(&format!("{prefix}gate_proj.weight"))?,
        up: up.linear(&format!("{prefix}up_proj.weight"))?,
        down: up.linear(&format!("{prefix}down_proj.weight"))?,
    })
}

impl Ffn {
    /// Loads layer `layer`'s feed-forward parts, each onto its part's device.
    pub fn load(cfg: &ModelConfig, ld: &mut Loader, layer: usize) -> Result<Ffn> {
        let p = format!("model.layers.{layer}.mlp.");
        let Some(moe) = cfg.moe.filter(|_| cfg.is_moe_layer(layer)) else {
            let exec = ld.part(Part::Mlp(layer))?;
            return Ok(Ffn::Dense { exec, mlp: Box::new(load_mlp(&mut ld.up, &p)?) });
        };
        let router_exec = ld.part(Part::Router(layer))?;
        let router = ld.up.linear(&format!("{p}gate.weight"))?;
        let bias = match moe.route.method {
            // moe_route selects with the bias in f32; older checkpoints store it in bf16.
            TopkMethod::NoAuxTc => Some(ld.up.float_f32(&format!("{p}gate.e_score_correction_bias"))?),
            _ => None,
        };
        let shared = if moe.n_shared_experts > 0 {
            let exec = ld.part(Part::Shared(layer))?;
            Some((exec, load_mlp(&mut ld.up, &format!("{p}shared_experts."))?))
        } else {
            None
        };
        let experts_exec = ld.part(Part::Experts(layer))?;
        let names = |proj: &str| -> Vec<String> {
            (0..moe.n_routed_experts).map(|j| format!("{p}experts.{j}.{proj}.weight")).collect()
        };
        let up = &mut ld.up;
        let experts = Mlp {
            gate: up.stacked(&names("gate_proj"))?,
            up: up.stacked(&names("up_proj"))?,
            down: up.stacked(&names("down_proj"))?,
        };
        Ok(Ffn::Moe(Box::new(MoeBlock {
            config: moe,
            router_exec,
            router,
            bias,
            shared,
            experts_exec,
            experts,
        })))
    }

    /// The feed-forward output for `x` (on exec `home`, the layer's residual device), returned on `home`.
    pub fn forward(&self, s: &Step, x: &Tensor, home: usize) -> Result<Tensor> {
        match self {
            Ffn::Dense { exec, mlp } => {
                let y = s.exec(*exec).mlp(&s.to(x, home, *exec)?, mlp)?;
                s.to(&y, *exec, home)
            }
            Ffn::Moe(moe) => moe.forward(s, x, home),
        }
    }
}

impl MoeBlock {
    fn forward(&self, s: &Step, x: &Tensor, home: usize) -> Result<Tensor> {
        let cfg = &self.config;
        let (rows, k, n_experts) = (s.rows, cfg.route.top_k, cfg.n_routed_experts);

        let r = s.exec(self.router_exec);
        let logits = r.linear(&s.to(x, home, self.router_exec)?, &self.router, DType::F32)?;
        let ids = r.tmp(&[rows, k], DType::I32)?;
        let weights = r.tmp(&[rows, k], DType::F32)?;
        let route = MoeRoute {
            logits,
            bias: self.bias.clone(),
            config: cfg.route,
            ids: ids.clone(),
            weights: weights.clone(),
        };
        r.launch(Op::MoeRoute(route))?;
        if let Some(routes) = s.routes.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            let mut bytes = vec![0u8; rows * k * 4];
            r.stream.download(&ids.buffer, ids.offset, &mut bytes)?;
            routes.push(bytemuck::pod_collect_to_vec(&bytes));
        }

        // Where the routed experts run on another device, the shared experts run on a side stream of
        // their own device meanwhile, joined after the routed output is back.
        let shared = match &self.shared {
            Some((exec, mlp)) => {
                let main = s.exec(*exec);
                let xs = s.to(x, home, *exec)?;
                let side = (*exec != self.experts_exec).then(|| main.side());
                let on = match &side {
                    Some(side) => {
                        side.stream.wait(main.stream.record()?.as_ref())?;
                        side
                    }
                    None => main,
                };
                Some((*exec, on.mlp(&xs, mlp)?, side))
            }
            None => None,
        };

        let ex = s.exec(self.experts_exec);
        let (xe, ids, weights) = (
            s.to(x, home, self.experts_exec)?,
            s.to(&ids, self.router_exec, self.experts_exec)?,
            s.to(&weights, self.router_exec, self.experts_exec)?,
        );
        let d = x.shape[1];
        let slots = ex.tmp(&[rows * k, d], ex.act)?;
        let offsets = ex.tmp(&[n_experts + 1], DType::I32)?;
        let slot_rows = ex.tmp(&[rows * k], DType::I32)?;
        let dispatch = MoeDispatch {
            x: xe,
            ids,
            n_experts,
            rows: slots.clone(),
            expert_offsets: offsets.clone(),
            slot_rows: slot_rows.clone(),
        };
        ex.launch(Op::MoeDispatch(dispatch))?;
        let gate = ex.grouped(&slots, &self.experts.gate, &offsets)?;
        let up = ex.grouped(&slots, &self.experts.up, &offsets)?;
        let expert_out = ex.grouped(&ex.silu_mul(&gate, &up)?, &self.experts.down, &offsets)?;
        let routed = ex.tmp(&[rows, d], ex.act)?;
        ex.launch(Op::MoeCombine(MoeCombine { expert_out, slot_rows, weights, out: routed.clone() }))?;

        let routed = s.to(&routed, self.experts_exec, home)?;
        let Some((exec, y, side)) = shared else { return Ok(routed) };
        if let Some(side) = side {
            s.exec(exec).join(&side)?;
        }
        s.exec(home).add(&routed, &s.to(&y, exec, home)?)
    }
}
