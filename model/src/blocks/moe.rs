//! The feed-forward half of a layer: a dense MLP (`layers.N.mlp`), or a mixture of experts whose router
//! (`layers.N.router`), shared experts (`layers.N.shared`) and routed experts (`layers.N.experts`) may each
//! live on a different device — routed experts in host RAM beside attention on a GPU is how DeepSeek-V3
//! runs on one GPU. The normalized hidden state comes from the layer's attention device and the output
//! goes back there; only hidden states and the routing (ids, weights) cross devices.
//!
//! A layer's routed experts may themselves be spread over devices (its most used experts on the GPU, the
//! rest in host RAM): then the host reads the step's routing, each device runs the token rows routed to
//! its experts, and the expert outputs are combined on the layer's attention device in the same order as
//! on one device, so the split changes no number.

use dsv3_core::ops::moe::{MoeCombine, MoeDispatch, MoeRoute, TopkMethod};
use dsv3_core::{DType, Error, Op, Result, Tensor};

use crate::config::{ModelConfig, Moe};
use crate::exec::{Exec, Loader, Mlp, Step};
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
    /// The routed experts by device: one group holding them all, or several.
    experts: Vec<ExpertGroup>,
}

/// The routed experts of a layer that live on one device.
struct ExpertGroup {
    exec: usize,
    /// Their ids, ascending; the group's local expert `i` is `ids[i]`.
    ids: Vec<usize>,
    /// Stacked `[ids.len(), N, K]`.
    mlp: Mlp,
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
        let mut experts = Vec::new();
        for (exec, ids) in ld.expert_groups(layer) {
            ld.part(Part::Expert(layer, ids[0]))?; // the uploader goes to the group's device
            let names = |proj: &str| -> Vec<String> {
                ids.iter().map(|j| format!("{p}experts.{j}.{proj}.weight")).collect()
            };
            let up = &mut ld.up;
            let mlp = Mlp {
                gate: up.stacked(&names("gate_proj"))?,
                up: up.stacked(&names("up_proj"))?,
                down: up.stacked(&names("down_proj"))?,
            };
            experts.push(ExpertGroup { exec, ids, mlp });
        }
        if experts.is_empty() {
            let why = format!("layer {layer}'s routed experts are not placed on any device");
            return Err(Error::invalid("place", "assignment", why));
        }
        Ok(Ffn::Moe(Box::new(MoeBlock { config: moe, router_exec, router, bias, shared, experts })))
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
        let (rows, k) = (s.rows, cfg.route.top_k);

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
        // The host reads the routing (a synchronisation of the router's stream) only where it must: to
        // record it, or to send each device the rows routed to its experts.
        let mut recorded = s.routes.lock().unwrap_or_else(|e| e.into_inner());
        let host_ids = if recorded.is_some() || self.experts.len() > 1 {
            let mut host = vec![0i32; rows * k];
            r.stream.download(&ids.buffer, ids.offset, bytemuck::cast_slice_mut(&mut host))?;
            if let Some(routes) = recorded.as_mut() {
                routes.push(host.clone());
            }
            host
        } else {
            Vec::new()
        };
        drop(recorded);

        // Where routed experts run on another device, the shared experts run on a side stream of their
        // own device meanwhile, joined after the routed output is back.
        let shared = match &self.shared {
            Some((exec, mlp)) => {
                let main = s.exec(*exec);
                let xs = s.to(x, home, *exec)?;
                let side = self.experts.iter().any(|g| g.exec != *exec).then(|| main.side());
                let on = match &side {
                    Some(side) => {
                        side.stream.wait(main.stream.record()?.as_ref())?;
                        side
                    }
                    None => main,
                };
                // `xs` (of the main stream's workspace) is kept until the join: the side stream may not
                // have run its work when the main stream would otherwise reuse the buffer.
                Some((*exec, on.mlp(&xs, mlp)?, side, xs))
            }
            None => None,
        };

        let routed = match self.experts.as_slice() {
            [group] => self.routed_on_one_device(s, x, home, group, &ids, &weights)?,
            _ => self.routed_split(s, x, home, &host_ids, &weights)?,
        };
        let Some((exec, y, side, xs)) = shared else { return Ok(routed) };
        if let Some(side) = side {
            s.exec(exec).join(&side)?;
        }
        drop(xs);
        s.exec(home).add(&routed, &s.to(&y, exec, home)?)
    }

    /// Token rows `x` `[R, D]` through `group`'s experts, row `i` going to the group's local expert
    /// `ids[i, j]` for each column j: the expert outputs `[R·kk, D]` in expert order, and the row of each
    /// slot `i·kk + j` among them (`MoeDispatch`'s permutation).
    fn run_group(&self, ex: &Exec, group: &ExpertGroup, x: Tensor, ids: Tensor) -> Result<(Tensor, Tensor)> {
        let slots = ids.shape[0] * ids.shape[1];
        let rows = ex.tmp(&[slots, x.shape[1]], ex.act)?;
        let offsets = ex.tmp(&[group.ids.len() + 1], DType::I32)?;
        let slot_rows = ex.tmp(&[slots], DType::I32)?;
        let dispatch = MoeDispatch {
            x,
            ids,
            n_experts: group.ids.len(),
            rows: rows.clone(),
            expert_offsets: offsets.clone(),
            slot_rows: slot_rows.clone(),
        };
        ex.launch(Op::MoeDispatch(dispatch))?;
        let gate = ex.grouped(&rows, &group.mlp.gate, &offsets)?;
        let up = ex.grouped(&rows, &group.mlp.up, &offsets)?;
        let expert_out = ex.grouped(&ex.silu_mul(&gate, &up)?, &group.mlp.down, &offsets)?;
        Ok((expert_out, slot_rows))
    }

    /// Every routed expert on one device: routing, expert GEMMs and combine stay there, with no host
    /// synchronisation.
    fn routed_on_one_device(
        &self,
        s: &Step,
        x: &Tensor,
        home: usize,
        group: &ExpertGroup,
        ids: &Tensor,
        weights: &Tensor,
    ) -> Result<Tensor> {
        let ex = s.exec(group.exec);
        let xe = s.to(x, home, group.exec)?;
        let ids = s.to(ids, self.router_exec, group.exec)?;
        let weights = s.to(weights, self.router_exec, group.exec)?;
        let (expert_out, slot_rows) = self.run_group(ex, group, xe, ids)?;
        let routed = ex.tmp(&[s.rows, x.shape[1]], ex.act)?;
        ex.launch(Op::MoeCombine(MoeCombine { expert_out, slot_rows, weights, out: routed.clone() }))?;
        s.to(&routed, group.exec, home)
    }

    /// Routed experts over several devices. From the host's copy of the routing `ids` `[rows, k]`, each
    /// device gets the token rows routed to its experts (one row per slot, with the group's local expert
    /// ids), runs them, and returns their outputs in slot order; on `home` the outputs are laid end to end
    /// and combined by one `MoeCombine` whose `slot_rows` point into them, summing each token's experts
    /// in the same order as on one device. A device none of this step's tokens chose does nothing.
    fn routed_split(
        &self,
        s: &Step,
        x: &Tensor,
        home: usize,
        ids: &[i32],
        weights: &Tensor,
    ) -> Result<Tensor> {
        let k = self.config.route.top_k;
        let d = x.shape[1];
        let owner = |id: i32| -> Result<(usize, usize)> {
            let id = usize::try_from(id).unwrap_or(usize::MAX);
            self.experts
                .iter()
                .enumerate()
                .find_map(|(g, group)| group.ids.binary_search(&id).ok().map(|local| (g, local)))
                .ok_or_else(|| Error::invalid("moe_route", "ids", format!("expert id {id} is not placed")))
        };
        let owners = ids.iter().map(|&id| owner(id)).collect::<Result<Vec<_>>>()?;
        let mut slot_rows = vec![0i32; ids.len()];
        // Every group's work is queued before any output is brought back, so that devices that run
        // asynchronously (GPUs, queued first: groups follow the devices' order) overlap the others.
        let mut outputs = Vec::new();
        let mut first = 0;
        for (g, group) in self.experts.iter().enumerate() {
            let slots: Vec<usize> = (0..ids.len()).filter(|&slot| owners[slot].0 == g).collect();
            if slots.is_empty() {
                continue;
            }
            let ex = s.exec(group.exec);
            let token_rows: Vec<i32> = slots.iter().map(|&slot| (slot / k) as i32).collect();
            let local: Vec<i32> = slots.iter().map(|&slot| owners[slot].1 as i32).collect();
            let xg = ex.gather(&s.to(x, home, group.exec)?, &ex.upload_i32(&token_rows)?)?;
            let local = ex.upload_i32(&local)?;
            let local = Tensor::contiguous(local.buffer, local.offset, &[slots.len(), 1], DType::I32);
            let (expert_out, permuted) = self.run_group(ex, group, xg, local)?;
            for (i, &slot) in slots.iter().enumerate() {
                slot_rows[slot] = (first + i) as i32;
            }
            outputs.push((group.exec, ex.gather(&expert_out, &permuted)?, first));
            first += slots.len();
        }
        let h = s.exec(home);
        let all = h.tmp(&[ids.len(), d], h.act)?;
        let row = d * h.act.size();
        for (exec, y, first) in outputs {
            // `y` is `[rows, d]`: its rows go to `all` from row `first` on.
            let y = s.to(&y, exec, home)?;
            h.stream.copy(&y.buffer, y.offset, &all.buffer, all.offset + first * row, y.shape[0] * row)?;
        }
        let routed = h.tmp(&[s.rows, d], h.act)?;
        let combine = MoeCombine {
            expert_out: all,
            slot_rows: h.upload_i32(&slot_rows)?,
            weights: s.to(weights, self.router_exec, home)?,
            out: routed.clone(),
        };
        h.launch(Op::MoeCombine(combine))?;
        Ok(routed)
    }
}
