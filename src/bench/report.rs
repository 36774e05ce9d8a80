//! A saved run as people read it: an aligned text table, Markdown (for `benches/results/`), or CSV (for
//! spreadsheets), each with the model, devices and commit above the rows.

use std::fmt::Write;

use super::results::Run;

const HEADER: [&str; 7] =
    ["phase", "prompt", "gen", "batch", "tok/s (mean ± sd)", "roofline tok/s", "of roofline"];

/// The lines above a table: what ran where.
fn context(run: &Run) -> Vec<String> {
    let m = &run.model;
    let devices: Vec<String> = run
        .devices
        .iter()
        .map(|d| {
            let peak = d.peak.as_ref().map_or("peak unknown".to_string(), |p| {
                format!(
                    "{:.1} GB/s, {:.0} GFLOP/s bf16, {}",
                    p.bytes_per_s / 1e9,
                    p.bf16_flops / 1e9,
                    p.source
                )
            });
            let driver =
                if d.driver.is_empty() { String::new() } else { format!(", {}", d.driver.join(", ")) };
            format!("{} {} ({peak}{driver})", d.id, d.name)
        })
        .collect();
    vec![
        format!(
            "model: {} {}, {} layers, {:.1} MB of weights, path {} ({})",
            m.arch,
            m.source,
            m.layers,
            m.weight_bytes as f64 / 1e6,
            m.dtype_path,
            m.numerics
        ),
        format!("devices: {}", devices.join("; ")),
        format!(
            "commit {}, {} ({} cores, {}), {} repetitions per cell",
            run.commit,
            run.machine.cpu,
            run.machine.cores,
            run.machine.os,
            run.rows.first().map_or(0, |r| r.samples.len())
        ),
    ]
}

fn cells(run: &Run) -> Vec<[String; 7]> {
    run.rows
        .iter()
        .map(|r| {
            let (roof, frac) = match &r.roofline {
                Some(l) => (format!("{:.1} ({})", l.rate, l.bound), format!("{:.1} %", 100.0 * l.fraction)),
                None => ("unknown".into(), "-".into()),
            };
            [
                r.phase.clone(),
                r.prompt.to_string(),
                r.gen.to_string(),
                r.batch.to_string(),
                format!("{:.2} ± {:.2}", r.mean, r.stddev),
                roof,
                frac,
            ]
        })
        .collect()
}

pub fn text(run: &Run) -> String {
    let rows = cells(run);
    let mut widths = HEADER.map(|h| h.chars().count());
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:>w$}")).collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = context(run).join("\n") + "\n\n";
    out += &line(&HEADER.map(String::from));
    for row in &rows {
        out += "\n";
        out += &line(row);
    }
    out
}

pub fn markdown(run: &Run) -> String {
    let mut out = String::new();
    for l in context(run) {
        let _ = writeln!(out, "{l}  ");
    }
    let _ = writeln!(out, "\n| {} |", HEADER.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(HEADER.len()));
    for row in cells(run) {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out.trim_end().to_string()
}

/// One line per row, every figure unrounded; the context repeats on each line so rows stand alone.
pub fn csv(run: &Run) -> String {
    let mut out = String::from(
        "phase,prompt,gen,batch,unit,mean,stddev,median,samples,roofline,bound,fraction,dtype_path,devices,commit",
    );
    let devices = run.devices.iter().map(|d| d.id.as_str()).collect::<Vec<_>>().join(" ");
    for r in &run.rows {
        let samples = r.samples.iter().map(f64::to_string).collect::<Vec<_>>().join(" ");
        let (roof, bound, frac) = match &r.roofline {
            Some(l) => (l.rate.to_string(), l.bound.clone(), l.fraction.to_string()),
            None => Default::default(),
        };
        let _ = write!(
            out,
            "\n{},{},{},{},{},{},{},{},{samples},{roof},{bound},{frac},{},{devices},{}",
            r.phase,
            r.prompt,
            r.gen,
            r.batch,
            r.unit,
            r.mean,
            r.stddev,
            r.median,
            run.model.dtype_path,
            run.commit
        );
    }
    out
}
