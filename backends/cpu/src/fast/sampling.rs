//! Argmax, top-k and seeded sampling in f32, parallel over rows.

use super::io::load_all;
use super::scratch::Scratch;
use crate::bind::Args;
use crate::checks;
use dsv3_core::ops::sampling::uniform;
use dsv3_core::ops::{Sample, TopK};
use dsv3_core::Result;
use rayon::prelude::*;

/// First index of the largest value.
fn argmax_row(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

/// Positions of the `k` largest values, largest first, ties to the lower position.
pub(super) fn largest(values: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    let by_value = |a: &usize, b: &usize| values[*b].total_cmp(&values[*a]).then(a.cmp(b));
    if k < order.len() {
        order.select_nth_unstable_by(k, by_value);
        order.truncate(k);
    }
    order.sort_by(by_value);
    order
}

fn rows(args: &Args, name: &'static str) -> Result<(Scratch, usize)> {
    let x = args.input(name)?;
    Ok((load_all(&x), x.t.shape[1]))
}

fn write_ids(args: &mut Args, name: &'static str, ids: &[usize]) -> Result<()> {
    args.output(name)?.write_f64(&ids.iter().map(|&i| i as f64).collect::<Vec<_>>());
    Ok(())
}

pub fn argmax(mut args: Args) -> Result<()> {
    let (x, n) = rows(&args, "x")?;
    let ids: Vec<usize> = x.par_chunks(n).map(argmax_row).collect();
    write_ids(&mut args, "out", &ids)
}

pub fn topk(op: &TopK, mut args: Args) -> Result<()> {
    let (x, n) = rows(&args, "x")?;
    let ids: Vec<usize> = x.par_chunks(n).flat_map_iter(|row| largest(row, op.k)).collect();
    let values: Vec<f64> = ids.iter().enumerate().map(|(i, &id)| x[(i / op.k) * n + id] as f64).collect();
    args.output("values")?.write_f64(&values);
    write_ids(&mut args, "ids", &ids)
}

pub fn sample(op: &Sample, mut args: Args) -> Result<()> {
    let (x, n) = rows(&args, "logits")?;
    let params = checks::sample_rows(op, &args)?;
    let ids: Vec<usize> = x
        .par_chunks(n)
        .zip(params)
        .map(|(row, (params, key))| {
            if params.temperature == 0.0 {
                return argmax_row(row);
            }
            let scaled: Vec<f32> = row.iter().map(|l| l / params.temperature).collect();
            let mut p = vec![0.0; n];
            super::rows::softmax_into(&scaled, &mut p);
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|a, b| p[*b].total_cmp(&p[*a]).then(a.cmp(b)));
            let mut mass = 0.0f32;
            let cut = order.iter().position(|&i| {
                mass += p[i];
                mass >= params.top_p
            });
            let nucleus = &order[..cut.map_or(n, |c| c + 1)];
            let race = |i: usize| p[i] as f64 / -uniform(params.seed, key, i as u64).ln();
            nucleus.iter().copied().fold(nucleus[0], |best, i| if race(i) > race(best) { i } else { best })
        })
        .collect();
    write_ids(&mut args, "out", &ids)
}
