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
            "commit {}, {} ({} cores, {}), repetitions per cell: {}",
            run.commit,
            run.machine.cpu,
            run.machine.cores,
            run.machine.os,
            run.rows.first().map_or(0, |r| r.samples.len())
        ),
    ]
}

/// Our rows; a peer's are listed by [`peers`].
fn cells(run: &Run) -> Vec<[String; 7]> {
    run.rows
        .iter()
        .filter(|r| r.peer.is_none())
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

/// Below the table, one line per row a peer was asked for: its figure and ours over it, or why it is
/// absent.
fn peers(run: &Run) -> Vec<String> {
    let mut lines = Vec::new();
    for r in run.rows.iter().filter(|r| r.peer.is_some()) {
        let key = r.key();
        let ours = r.peer_of().and_then(|(_, ours)| run.ours(ours));
        let ratio = ours.map_or(String::new(), |o| format!(", ours {:.2}x its rate", o.mean / r.mean));
        let what = r.peer.as_deref().unwrap_or_default();
        lines.push(format!("{key} ({what}): {:.2} ± {:.2} {}{ratio}", r.mean, r.stddev, r.unit));
    }
    for a in &run.absent_peers {
        lines.push(format!("{}: peer {}: absent: {}", a.row, a.peer, a.reason));
    }
    lines
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
    let peers = peers(run);
    if !peers.is_empty() {
        out += &format!("\n\npeers:\n{}", peers.join("\n"));
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
    let peers = peers(run);
    if !peers.is_empty() {
        let _ = writeln!(out, "\nPeers:\n");
        for line in peers {
            let _ = writeln!(out, "* {line}");
        }
    }
    out.trim_end().to_string()
}

/// One line per row, every figure unrounded; the context repeats on each line so rows stand alone. A
/// peer's row says what ran in `peer` (empty for ours); absent peers are in the JSON and the tables.
pub fn csv(run: &Run) -> String {
    let mut out = String::from(
        "phase,prompt,gen,batch,unit,mean,stddev,median,samples,roofline,bound,fraction,dtype_path,devices,commit,peer",
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
            "\n{},{},{},{},{},{},{},{},{samples},{roof},{bound},{frac},{},{devices},{},{}",
            r.phase,
            r.prompt,
            r.gen,
            r.batch,
            r.unit,
            r.mean,
            r.stddev,
            r.median,
            run.model.dtype_path,
            run.commit,
            // Free text: commas would split the field.
            r.peer.as_deref().unwrap_or_default().replace(',', ";")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::results::{DeviceEntry, Machine, ModelEntry, Roofline, Row};
    use super::*;

    fn run() -> Run {
        let mut decode = Row::new("decode", (512, 128, 8), vec![40.0, 42.0]);
        decode.roofline = Some(Roofline {
            rate: 100.0,
            bound: "memory".into(),
            fraction: 0.41,
            tokens: 8,
            flops: 1e9,
            bytes: 1e8,
        });
        Run {
            format: "dsv3-bench".into(),
            version: 1,
            kind: "model".into(),
            created_unix_s: 0,
            commit: "abc1234".into(),
            flags: vec![],
            machine: Machine { cpu: "Test CPU".into(), cores: 2, os: "linux".into(), arch: "x86_64".into() },
            devices: vec![DeviceEntry {
                id: "cuda:0".into(),
                name: "H200".into(),
                arch: "sm_90a".into(),
                driver: vec!["nvrtc 13.0".into()],
                memory_bytes: 0,
                peak: None,
            }],
            model: ModelEntry {
                source: "built-in".into(),
                arch: "deepseek_v3".into(),
                layers: 2,
                weight_bytes: 2_000_000,
                dtype_path: "bf16".into(),
                numerics: "bf16 activations".into(),
            },
            rows: vec![Row::new("prefill", (512, 128, 8), vec![1000.0]), decode],
            absent_peers: vec![],
        }
    }

    #[test]
    fn every_format_carries_the_rows_and_their_context() {
        let text = text(&run());
        assert!(
            text.contains("cuda:0 H200 (peak unknown, nvrtc 13.0)") && text.contains("commit abc1234"),
            "{text}"
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines.ends_with(&[
                "  phase  prompt  gen  batch  tok/s (mean ± sd)  roofline tok/s  of roofline",
                "prefill     512  128      8     1000.00 ± 0.00         unknown            -",
                " decode     512  128      8       41.00 ± 1.41  100.0 (memory)       41.0 %",
            ]),
            "{text}"
        );
        let md = markdown(&run());
        assert!(md.ends_with("| decode | 512 | 128 | 8 | 41.00 ± 1.41 | 100.0 (memory) | 41.0 % |"), "{md}");
        assert!(md.contains("\n|---|---|---|---|---|---|---|\n"), "{md}");
        let csv = csv(&run());
        let rows: Vec<&str> = csv.lines().collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1], "prefill,512,128,8,tok/s,1000,0,1000,1000,,,,bf16,cuda:0,abc1234,");
        assert_eq!(rows[2].split(',').nth(8), Some("40 42"));
        assert_eq!(rows[0].split(',').count(), rows[2].split(',').count());
    }
}
