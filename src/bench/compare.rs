//! `dsv3 bench compare A.json B.json`: B against A row by row, the ratio of means with a noise verdict
//! from the raw samples (Welch's t-test, see `stats::welch`), and exit status 1 for a regression beyond
//! `--fail-on-regression PCT` that is outside the noise.

use std::fmt::Write;
use std::path::PathBuf;

use super::results::{ResultsError, Run};
use super::stats::{self, Verdict};
use crate::cli::Checked;
use crate::out::outln;

/// Compare two saved runs (`bench model --json`): per-row ratio B / A and whether it is outside the noise
///
/// Rows are matched by phase, prompt, gen and batch; a row in only one file is listed as such. The verdict
/// is Welch's t-test at 95 % on the two rows' samples (faster, slower, within noise; a row with one sample
/// has no noise estimate and gets no verdict). Exit status 1 when --fail-on-regression PCT is given and a
/// row of B is slower than A by more than PCT % with a "slower" verdict; 2 for a file that is not a saved
/// run, naming the file and field.
#[derive(clap::Args)]
pub struct Args {
    /// The baseline run
    #[arg(value_name = "A.json")]
    a: PathBuf,
    /// The run judged against it
    #[arg(value_name = "B.json")]
    b: PathBuf,
    /// Fail (status 1) when a row is slower than A's by more than PCT percent, outside the noise
    #[arg(long, value_name = "PCT", value_parser = PCT)]
    fail_on_regression: Option<f64>,
}

const PCT: Checked<f64> = Checked(|s| match s.parse::<f64>() {
    Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
    _ => Err(format!("--fail-on-regression {s}: must be a percentage in [0, 100]")),
});

pub fn run(args: Args) -> i32 {
    crate::finish("bench compare", try_run(&args))
}

/// One matched row.
struct Line {
    key: String,
    a: Option<(f64, f64)>,
    b: Option<(f64, f64)>,
    /// B / A of the means.
    ratio: Option<f64>,
    verdict: Option<Verdict>,
}

fn try_run(args: &Args) -> Result<i32, String> {
    let a = Run::load(&args.a).map_err(|e| e.to_string())?;
    let b = Run::load(&args.b).map_err(|e| e.to_string())?;
    let lines = compare(&a, &b, &args.b).map_err(|e| e.to_string())?;
    let regressions: Vec<&Line> = match args.fail_on_regression {
        Some(pct) => lines
            .iter()
            .filter(|l| l.verdict == Some(Verdict::Lower) && l.ratio.is_some_and(|r| (1.0 - r) * 100.0 > pct))
            .collect(),
        None => Vec::new(),
    };
    let mut out = String::new();
    for (name, run) in [("A", &a), ("B", &b)] {
        let devices: Vec<&str> = run.devices.iter().map(|d| d.name.as_str()).collect();
        let _ = writeln!(
            out,
            "{name}: commit {}, {} path, {} on {}",
            run.commit,
            run.model.dtype_path,
            devices.join(", "),
            run.machine.cpu
        );
    }
    out += &table(&lines);
    for l in &regressions {
        let pct = (1.0 - l.ratio.unwrap_or(1.0)) * 100.0;
        let _ = write!(out, "\nregression: {} is {pct:.1} % slower, outside the noise", l.key);
    }
    outln!("{out}")?;
    Ok(if regressions.is_empty() { 0 } else { 1 })
}

/// Matches B's rows to A's; `b_file` names B in errors (a row whose unit differs cannot be compared).
fn compare(a: &Run, b: &Run, b_file: &std::path::Path) -> Result<Vec<Line>, ResultsError> {
    let field =
        |field: String, reason: String| ResultsError::Field { file: b_file.to_path_buf(), field, reason };
    if a.kind != b.kind {
        return Err(field("kind".into(), format!("`{}`, but the baseline is `{}`", b.kind, a.kind)));
    }
    let mut lines = Vec::new();
    for ra in &a.rows {
        let found = b.rows.iter().enumerate().find(|(_, rb)| rb.key() == ra.key());
        let (rb, verdict, ratio) = match found {
            Some((i, rb)) => {
                if rb.unit != ra.unit {
                    return Err(field(
                        format!("rows[{i}].unit"),
                        format!("`{}`, the baseline's is `{}`", rb.unit, ra.unit),
                    ));
                }
                (
                    Some((rb.mean, rb.stddev)),
                    Some(stats::welch(&ra.samples, &rb.samples)),
                    Some(rb.mean / ra.mean),
                )
            }
            None => (None, None, None),
        };
        lines.push(Line { key: ra.key(), a: Some((ra.mean, ra.stddev)), b: rb, ratio, verdict });
    }
    for rb in b.rows.iter().filter(|rb| !a.rows.iter().any(|ra| ra.key() == rb.key())) {
        lines.push(Line {
            key: rb.key(),
            a: None,
            b: Some((rb.mean, rb.stddev)),
            ratio: None,
            verdict: None,
        });
    }
    Ok(lines)
}

/// Rates are higher-is-better (tok/s), so a higher mean is "faster".
fn verdict_text(line: &Line) -> &'static str {
    match (line.verdict, line.a, line.b) {
        (Some(Verdict::Higher), ..) => "faster",
        (Some(Verdict::Lower), ..) => "slower",
        (Some(Verdict::WithinNoise), ..) => "within noise",
        (Some(Verdict::Unknown), ..) => "no noise estimate (one sample)",
        (None, None, _) => "only in B",
        (None, _, _) => "only in A",
    }
}

fn table(lines: &[Line]) -> String {
    let rate = |r: Option<(f64, f64)>| r.map_or("-".to_string(), |(m, s)| format!("{m:.2} ± {s:.2}"));
    let rows: Vec<[String; 5]> = lines
        .iter()
        .map(|l| {
            let ratio = l.ratio.map_or("-".to_string(), |r| format!("{r:.3}"));
            [l.key.clone(), rate(l.a), rate(l.b), ratio, verdict_text(l).to_string()]
        })
        .collect();
    let header = ["row", "A tok/s", "B tok/s", "B / A", "verdict"].map(String::from);
    let mut widths = [0; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = write!(out, "\n{}", cells.join("  ").trim_end());
    }
    out
}
