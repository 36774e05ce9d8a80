use crate::bind::Args;
use crate::checks;
use dsv3_core::ops::{CacheAppend, RmsNorm, Rope};
use dsv3_core::{Error, Result};

pub fn rms_norm(op: &RmsNorm, mut args: Args) -> Result<()> {
    let x = args.input("x")?.to_f64();
    let w = args.input("weight")?.to_f64();
    let d = w.len();
    let mut out = vec![0.0; x.len()];
    for (o, row) in out.chunks_mut(d.max(1)).zip(x.chunks(d.max(1))) {
        let mean_square = row.iter().map(|v| v * v).sum::<f64>() / d as f64;
        let inv_rms = 1.0 / (mean_square + op.eps as f64).sqrt();
        for ((o, v), g) in o.iter_mut().zip(row).zip(&w) {
            *o = g * (v * inv_rms);
        }
    }
    args.output("out")?.write_f64(&out);
    Ok(())
}

pub fn rope(op: &Rope, mut args: Args) -> Result<()> {
    let x = args.input("x")?.to_f64();
    let positions = args.input("positions")?.i32s();
    let freqs = op.params.inv_freqs();
    let (h, d) = (op.x.shape[1], op.x.shape[2]);
    let mut out = vec![0.0; x.len()];
    for (tok, &position) in positions.iter().enumerate() {
        for head in 0..h {
            let base = (tok * h + head) * d;
            for (i, f) in freqs.iter().enumerate() {
                // The angle is rounded to f32, as both references compute it.
                let angle = (position as f32 * f) as f64;
                let (sin, cos) = angle.sin_cos();
                let (x0, x1) = (x[base + 2 * i], x[base + 2 * i + 1]);
                out[base + 2 * i] = x0 * cos - x1 * sin;
                out[base + 2 * i + 1] = x0 * sin + x1 * cos;
            }
        }
    }
    args.output("out")?.write_f64(&out);
    Ok(())
}

fn binary(mut args: Args, a: &'static str, b: &'static str, f: impl Fn(f64, f64) -> f64) -> Result<()> {
    let a = args.input(a)?.to_f64();
    let b = args.input(b)?.to_f64();
    let out: Vec<f64> = a.iter().zip(&b).map(|(&x, &y)| f(x, y)).collect();
    args.output("out")?.write_f64(&out);
    Ok(())
}

pub fn silu_mul(args: Args) -> Result<()> {
    binary(args, "gate", "up", |g, u| g / (1.0 + (-g).exp()) * u)
}

pub fn add(args: Args) -> Result<()> {
    binary(args, "a", "b", |a, b| a + b)
}

pub fn embedding(mut args: Args) -> Result<()> {
    let table = args.input("table")?;
    let (v, d) = (table.t.shape[0], table.t.shape[1]);
    let ids = checks::ids_in_range("embedding", "ids", &args.input("ids")?, v)?;
    let mut out = Vec::with_capacity(ids.len() * d);
    for id in ids {
        out.extend((0..d).map(|c| table.at(&[id, c])));
    }
    args.output("out")?.write_f64(&out);
    Ok(())
}

pub fn softmax(mut args: Args) -> Result<()> {
    let x = args.input("x")?;
    let n = x.t.shape[1];
    let mut out = x.to_f64();
    for row in out.chunks_mut(n) {
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        row.iter_mut().for_each(|v| *v = (*v - max).exp());
        let sum: f64 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= sum);
    }
    args.output("out")?.write_f64(&out);
    Ok(())
}

pub fn cast(mut args: Args) -> Result<()> {
    let x = args.input("x")?.to_f64();
    args.output("out")?.write_f64(&x);
    Ok(())
}

/// A copy of bytes, exact in both CPU modes (the fast mode calls this too). Every length is checked
/// before anything is written, so a bad one leaves the cache as it was.
pub fn cache_append(op: &CacheAppend, mut args: Args) -> Result<()> {
    const OP: &str = "cache_append";
    let rows = args.input("rows")?;
    let ([_, t, w], pages) =
        (<[usize; 3]>::try_from(&rows.t.shape[..]).expect("validated rank 3"), op.pages());
    let lens = checks::kv_lens(OP, &args.input("kv_lens")?, t, pages.capacity())?;
    // Only the step's positions are located: the earlier ones are not touched.
    let steps: Vec<_> = lens.iter().map(|&len| len - t..len).collect();
    let located = checks::cache_rows(OP, &args, pages, &steps)?;
    // (sequence, position, cache row) of every row written; a row written twice is a shared page.
    let writes: Vec<(usize, usize, usize)> = steps
        .iter()
        .zip(&located)
        .enumerate()
        .flat_map(|(b, (range, rows))| range.clone().zip(rows).map(move |(u, &row)| (b, u, row)))
        .collect();
    let mut seen = std::collections::HashMap::new();
    for &(b, u, row) in &writes {
        if let Some((b0, u0)) = seen.insert(row, (b, u)) {
            let why = format!("sequence {b} position {u} and sequence {b0} position {u0} are one cache row");
            return Err(Error::invalid(OP, "block_table", why));
        }
    }
    let cache = args.output("cache")?;
    let size = rows.t.dtype.size();
    for (b, u, row) in writes {
        let i = u - (lens[b] - t);
        let src = (b * rows.t.strides[0] + i * rows.t.strides[1]) * size;
        let (page, r) = (row / pages.page, row % pages.page);
        let dst = (page * cache.t.strides[0] + r * cache.t.strides[1]) * size;
        cache.bytes[dst..dst + w * size].copy_from_slice(&rows.bytes[src..src + w * size]);
    }
    Ok(())
}
