//! Peak rates for "% of peak" figures, measured on the device the first time they are asked for: an f32
//! FMA loop and a streaming read. Crude (wall-clock around a submission, best of three), but the same
//! probe on every device; bf16 and FP8 are decoded to f32 in the shaders, so their peak is the f32 one.

use crate::device::Ctx;
use crate::kernels::{self, input, output, Elem};
use crate::stream::{Recorder, WgpuStream};
use dsv3_core::Peak;
use std::time::Instant;

const FMA_GROUPS: u32 = 1024;
const FMA_ITERATIONS: u32 = 2048;
const READ_BYTES: u64 = 64 << 20;

pub fn measure(ctx: &Ctx, stream: &WgpuStream) -> Option<Peak> {
    let f32_flops = probe(ctx, stream, 0).ok()?;
    let bytes_per_s = probe(ctx, stream, 1).ok()?;
    Some(Peak {
        f32_flops,
        bf16_flops: f32_flops,
        fp8_flops: f32_flops,
        bytes_per_s,
        source:
            "measured on this device: an f32 FMA loop (8 chains per thread) and a 64 MiB streaming read, \
                 best of 3 submissions (bf16 and FP8 are decoded to f32 in WGSL, so their peak is f32's)"
                .into(),
    })
}

/// Rate of one probe: FLOP/s (opk 0) or bytes/s (opk 1).
fn probe(ctx: &Ctx, stream: &WgpuStream, opk: u32) -> dsv3_core::Result<f64> {
    let mut rec = Recorder::new(ctx, "peak", 0);
    let kernel = rec.kernel(&kernels::Spec {
        name: "peak",
        sources: &[kernels::src::PEAK],
        args: &[input("buf", Elem::Word), output("sink", Elem::Word)],
        consts: &[("OPK", opk)],
    })?;
    let size = if opk == 1 { READ_BYTES.min(ctx.binding_limit / 4 * 4).max(4) } else { 4 };
    let buf = rec.scratch(size);
    let sink = rec.scratch(4);
    let words = (size / 4) as u32;
    let params = vec![0.999f32.to_bits(), 1e-3f32.to_bits(), FMA_ITERATIONS, words];
    let groups = if opk == 0 { rec.grid(FMA_GROUPS) } else { rec.grid(words.div_ceil(256 * 16).max(1)) };
    let work =
        if opk == 0 { 2.0 * 8.0 * FMA_ITERATIONS as f64 * FMA_GROUPS as f64 * 256.0 } else { size as f64 };
    rec.dispatch(kernel, vec![buf, sink], params, groups)?;
    let cmds = rec.cmds;
    let mut best = f64::INFINITY;
    for i in 0..4 {
        let start = Instant::now();
        stream.execute(cmds.iter().map(|c| c.clone_cmd()).collect())?;
        let t = start.elapsed().as_secs_f64();
        if i > 0 {
            best = best.min(t); // the first run compiles and warms up
        }
    }
    Ok(work / best)
}
