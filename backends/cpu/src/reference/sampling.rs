use super::moe::top_indices;
use crate::bind::Args;
use crate::checks;
use dsv3_core::ops::sampling::uniform;
use dsv3_core::ops::{Sample, TopK};
use dsv3_core::Result;

fn rows(args: &Args, name: &'static str) -> Result<(Vec<f64>, usize)> {
    let x = args.input(name)?;
    Ok((x.to_f64(), x.t.shape[1]))
}

pub fn argmax(mut args: Args) -> Result<()> {
    let (x, n) = rows(&args, "x")?;
    let ids: Vec<f64> = x.chunks(n).map(|row| top_indices(row, 1)[0] as f64).collect();
    args.output("out")?.write_f64(&ids);
    Ok(())
}

pub fn topk(op: &TopK, mut args: Args) -> Result<()> {
    let (x, n) = rows(&args, "x")?;
    let mut values = Vec::new();
    let mut ids = Vec::new();
    for row in x.chunks(n) {
        for i in top_indices(row, op.k) {
            values.push(row[i]);
            ids.push(i as f64);
        }
    }
    args.output("values")?.write_f64(&values);
    args.output("ids")?.write_f64(&ids);
    Ok(())
}

pub fn sample(op: &Sample, mut args: Args) -> Result<()> {
    let (x, n) = rows(&args, "logits")?;
    let params = checks::sample_rows(op, &args)?;
    let mut chosen = Vec::new();
    for (row, (params, key)) in x.chunks(n).zip(params) {
        if params.temperature == 0.0 {
            chosen.push(top_indices(row, 1)[0] as f64);
            continue;
        }
        let scaled: Vec<f64> = row.iter().map(|l| l / params.temperature as f64).collect();
        let max = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let exps: Vec<f64> = scaled.iter().map(|s| (s - max).exp()).collect();
        let sum: f64 = exps.iter().sum();
        let p: Vec<f64> = exps.iter().map(|e| e / sum).collect();
        let order = top_indices(&p, n);
        let mut mass = 0.0;
        let mut nucleus = Vec::new();
        for &i in &order {
            nucleus.push(i);
            mass += p[i];
            if mass >= params.top_p as f64 {
                break;
            }
        }
        let race = |i: usize| p[i] / -uniform(params.seed, key, i as u64).ln();
        let winner =
            nucleus.iter().copied().fold(nucleus[0], |best, i| if race(i) > race(best) { i } else { best });
        chosen.push(winner as f64);
    }
    args.output("out")?.write_f64(&chosen);
    Ok(())
}
