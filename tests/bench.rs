//! `dsv3 bench model` and `dsv3 bench compare` through the binary: a tiny grid on the built-in model
//! writes a saved run with every field of the schema, a table and an SVG chart; comparisons of
//! hand-written runs give the verdicts and exit statuses documented, and bad files or flags a named error.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

fn dsv3(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dsv3"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("dsv3 runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn tempdir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Exit status `code`, no panic, and stdout + stderr containing each of `says`.
fn expect(what: &str, out: &Output, code: i32, says: &[&str]) -> String {
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(!all.contains("panicked"), "{what}: panicked:\n{all}");
    assert_eq!(out.status.code(), Some(code), "{what}: exit status {:?}:\n{all}", out.status);
    for s in says {
        assert!(all.contains(s), "{what}: output lacks {s:?}:\n{all}");
    }
    all
}

#[test]
fn bench_model_saves_a_complete_run_a_table_and_a_chart() {
    let dir = tempdir("model");
    let (json_file, svg_file) = (dir.join("run.json"), dir.join("run.svg"));
    let args =
        ["bench", "model", "--backend", "cpu", "-p", "4", "-n", "2", "-b", "1,2", "--repetitions", "2"];
    let mut args = args.to_vec();
    args.extend(["--warmup", "0", "--json", path(&json_file), "--plot", path(&svg_file), "--markdown"]);
    let out = dsv3(&args);
    let shown = expect(
        "bench model",
        &out,
        0,
        &["| phase | prompt |", "| prefill | 4 | 2 | 1 |", "| decode | 4 | 2 | 2 |"],
    );
    assert!(text(&out.stdout).contains("commit "), "{shown}");

    let run: Value = serde_json::from_slice(&std::fs::read(&json_file).unwrap()).unwrap();
    assert_eq!(run["format"], "dsv3-bench");
    assert_eq!(run["version"], 1);
    assert_eq!(run["kind"], "model");
    assert!(run["created_unix_s"].as_u64().unwrap() > 1_700_000_000);
    assert!(!run["commit"].as_str().unwrap().is_empty());
    assert_eq!(run["flags"][0], "bench");
    assert!(run["flags"].as_array().unwrap().contains(&json!("1,2")));
    let machine = &run["machine"];
    assert!(!machine["cpu"].as_str().unwrap().is_empty() && machine["cores"].as_u64().unwrap() >= 1);
    assert!(machine["os"].is_string() && machine["arch"].is_string());
    let devices = run["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0]["id"], "cpu:0");
    assert!(!devices[0]["name"].as_str().unwrap().is_empty() && devices[0]["driver"].is_array());
    assert!(devices[0]["peak"]["bytes_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(run["model"]["source"], "built-in (random weights)");
    assert_eq!(run["model"]["layers"], 2);
    assert!(run["model"]["dtype_path"].is_string() && run["model"]["weight_bytes"].as_u64().unwrap() > 0);

    let rows = run["rows"].as_array().unwrap();
    let keys: Vec<(&str, u64)> =
        rows.iter().map(|r| (r["phase"].as_str().unwrap(), r["batch"].as_u64().unwrap())).collect();
    assert_eq!(keys, [("prefill", 1), ("decode", 1), ("prefill", 2), ("decode", 2)]);
    for r in rows {
        assert_eq!(
            (r["prompt"].as_u64(), r["gen"].as_u64(), r["unit"].as_str()),
            (Some(4), Some(2), Some("tok/s"))
        );
        let samples: Vec<f64> =
            r["samples"].as_array().unwrap().iter().map(|s| s.as_f64().unwrap()).collect();
        assert_eq!(samples.len(), 2, "{r}");
        assert!(samples.iter().all(|s| s.is_finite() && *s > 0.0), "{r}");
        let mean = (samples[0] + samples[1]) / 2.0;
        assert!((r["mean"].as_f64().unwrap() - mean).abs() <= 1e-9 * mean, "{r}");
        assert!((r["median"].as_f64().unwrap() - mean).abs() <= 1e-9 * mean, "{r}");
        let sd = (samples[0] - samples[1]).abs() / 2f64.sqrt();
        assert!((r["stddev"].as_f64().unwrap() - sd).abs() <= 1e-9 * mean, "{r}");
        let roof = &r["roofline"];
        assert!(roof["rate"].as_f64().unwrap() > 0.0, "{r}");
        assert!(["memory", "compute"].contains(&roof["bound"].as_str().unwrap()), "{r}");
        let tokens = if r["phase"] == "prefill" { 4 } else { r["batch"].as_u64().unwrap() };
        assert_eq!(roof["tokens"].as_u64(), Some(tokens), "{r}");
        assert!(roof["flops"].as_f64().unwrap() > 0.0 && roof["bytes"].as_f64().unwrap() > 0.0, "{r}");
        let fraction = r["mean"].as_f64().unwrap() / roof["rate"].as_f64().unwrap();
        assert!((roof["fraction"].as_f64().unwrap() - fraction).abs() <= 1e-9 * fraction, "{r}");
    }

    let svg = std::fs::read_to_string(&svg_file).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{}", &svg[..svg.len().min(200)]);
    assert!(svg.contains("decode tok/s by batch") && svg.contains("p4 n2 roofline"));
    assert!(svg.contains("roofline (weights)") && svg.contains("cpu:0 roof"), "{svg}");

    // A run against itself: every row within noise, no regression at any threshold.
    let out = dsv3(&["bench", "compare", path(&json_file), path(&json_file), "--fail-on-regression", "0"]);
    let shown = expect("compare a run with itself", &out, 0, &["within noise"]);
    assert!(!shown.contains("slower") && !shown.contains("faster"), "{shown}");
}

/// A saved run with the given rows (phase, batch, samples); summaries are left wrong on purpose: they
/// are recomputed from the samples.
fn saved(rows: &[(&str, u64, &[f64])]) -> Value {
    let rows: Vec<Value> = rows
        .iter()
        .map(|(phase, batch, samples)| {
            json!({"phase": phase, "prompt": 4, "gen": 2, "batch": batch, "unit": "tok/s",
                   "samples": samples, "mean": 0.0, "stddev": 0.0, "median": 0.0, "roofline": null})
        })
        .collect();
    json!({
        "format": "dsv3-bench", "version": 1, "kind": "model", "created_unix_s": 1765000000,
        "commit": "abc1234", "flags": ["bench", "model"],
        "machine": {"cpu": "Test CPU", "cores": 2, "os": "linux", "arch": "x86_64"},
        "devices": [{"id": "cpu:0", "name": "Test CPU", "arch": "x86_64", "driver": [], "memory_bytes": 1,
                     "peak": null}],
        "model": {"source": "built-in", "arch": "deepseek_v3", "layers": 2, "weight_bytes": 1,
                  "dtype_path": "bf16", "numerics": "bf16"},
        "rows": rows,
    })
}

fn write(dir: &Path, name: &str, value: &Value) -> PathBuf {
    let file = dir.join(name);
    std::fs::write(&file, value.to_string()).unwrap();
    file
}

#[test]
fn compare_gives_verdicts_from_the_samples_and_fails_on_a_regression() {
    let dir = tempdir("compare");
    let base: &[f64] = &[100.0, 101.0, 99.0, 100.5, 99.5];
    let a = write(&dir, "a.json", &saved(&[("prefill", 1, base), ("decode", 1, base), ("decode", 8, base)]));
    let b = write(
        &dir,
        "b.json",
        &saved(&[
            ("prefill", 1, &[100.4, 101.4, 99.4, 100.9, 99.9]), // +0.4 %: noise
            ("decode", 1, &[90.0, 91.0, 89.0, 90.5, 89.5]),     // −10 %
            ("decode", 32, base),
        ]),
    );
    let (a, b) = (path(&a), path(&b));
    let shown = expect(
        "compare",
        &dsv3(&["bench", "compare", a, b]),
        0,
        &["B / A", "0.900", "only in A", "only in B"],
    );
    let line = |key: &str| shown.lines().find(|l| l.starts_with(key)).unwrap_or_default().to_string();
    assert!(line("prefill p4 n2 b1").ends_with("within noise"), "{shown}");
    assert!(line("decode p4 n2 b1").ends_with("slower"), "{shown}");
    assert!(
        line("decode p4 n2 b8").ends_with("only in A") && line("decode p4 n2 b32").ends_with("only in B")
    );
    // The other way round the same row is faster.
    let shown = expect("compare B A", &dsv3(&["bench", "compare", b, a]), 0, &[]);
    assert!(shown.lines().any(|l| l.starts_with("decode p4 n2 b1") && l.ends_with("faster")), "{shown}");

    // 10 % slower and outside the noise: a regression past 5 %, not past 20 %.
    let out = dsv3(&["bench", "compare", a, b, "--fail-on-regression", "5"]);
    let shown = expect("regression past 5 %", &out, 1, &["regression: decode p4 n2 b1 is 10.0 % slower"]);
    assert!(!shown.contains("regression: prefill"), "{shown}");
    expect(
        "no regression past 20 %",
        &dsv3(&["bench", "compare", a, b, "--fail-on-regression", "20"]),
        0,
        &[],
    );

    // A large drop whose samples scatter as widely is noise, and fails nothing.
    let noisy = write(&dir, "noisy.json", &saved(&[("decode", 1, &[60.0, 140.0, 50.0, 150.0, 70.0])]));
    let out = dsv3(&["bench", "compare", a, path(&noisy), "--fail-on-regression", "1"]);
    expect("noise is no regression", &out, 0, &["within noise"]);
    // One sample: no noise estimate, so no verdict and no failure.
    let single = write(&dir, "single.json", &saved(&[("decode", 1, &[10.0])]));
    let out = dsv3(&["bench", "compare", a, path(&single), "--fail-on-regression", "1"]);
    expect("one sample", &out, 0, &["no noise estimate"]);
}

#[test]
fn bad_files_and_flags_get_a_named_error() {
    let dir = tempdir("bad");
    let good = write(&dir, "good.json", &saved(&[("decode", 1, &[1.0, 2.0])]));
    let mut bad_samples = saved(&[("decode", 1, &[1.0, 2.0])]);
    bad_samples["rows"][0]["samples"] = json!("fast");
    let mut negative = saved(&[("decode", 1, &[1.0, 2.0])]);
    negative["rows"][0]["samples"] = json!([1.0, -2.0]);
    let mut other_format = saved(&[]);
    other_format["format"] = json!("llama-bench");
    let mut future = saved(&[]);
    future["version"] = json!(2);
    let mut no_machine = saved(&[]);
    no_machine.as_object_mut().unwrap().remove("machine");
    let mut op_kind = saved(&[]);
    op_kind["kind"] = json!("op");
    let mut other_unit = saved(&[("decode", 1, &[1.0, 2.0])]);
    other_unit["rows"][0]["unit"] = json!("ms");
    let twice = saved(&[("decode", 1, &[1.0, 2.0]), ("decode", 1, &[1.0, 2.0])]);
    let cases = [
        ("samples.json", bad_samples, "field `rows[0].samples`"),
        ("negative.json", negative, "field `rows[0].samples`: -2 is not a positive rate"),
        ("format.json", other_format, "field `format`"),
        ("version.json", future, "field `version`: 2, this build reads version 1"),
        ("machine.json", no_machine, "missing field `machine`"),
        ("kind.json", op_kind, "field `kind`: `op`, but the baseline is `model`"),
        ("unit.json", other_unit, "field `rows[0].unit`"),
        ("twice.json", twice, "field `rows[1]`: `decode p4 n2 b1` appears twice"),
    ];
    for (name, value, says) in cases {
        let file = write(&dir, name, &value);
        let out = dsv3(&["bench", "compare", path(&good), path(&file)]);
        expect(name, &out, 2, &[path(&file), says]);
    }
    let not_json = dir.join("not.json");
    std::fs::write(&not_json, "{\"format\": ").unwrap();
    expect(
        "not JSON",
        &dsv3(&["bench", "compare", path(&not_json), path(&good)]),
        2,
        &[path(&not_json), "not JSON"],
    );
    let absent = dir.join("absent.json");
    expect("absent", &dsv3(&["bench", "compare", path(&absent), path(&good)]), 2, &[path(&absent)]);
    let chart = dir.join("chart.svg");
    expect("plot absent", &dsv3(&["bench", "plot", path(&absent), path(&chart)]), 2, &[path(&absent)]);
    expect("plot not JSON", &dsv3(&["bench", "plot", path(&not_json), path(&chart)]), 2, &["not JSON"]);
    assert!(!chart.exists(), "no chart for a file that is not a run");

    let g = path(&good);
    for (args, says) in [
        (&["bench", "compare", g, g, "--fail-on-regression", "150"][..], "--fail-on-regression 150: must be"),
        (&["bench", "model", "-p", "0"], "--prompt 0: must be in 1..="),
        (&["bench", "model", "-n", "1"], "--gen 1: must be in 2..="),
        (&["bench", "model", "-b", "1,x"], "--batch: `x` is not a number"),
        (&["bench", "model", "-b", "2,2"], "--batch 2,2: 2 appears twice"),
        (&["bench", "model", "--repetitions", "0"], "--repetitions 0: must be in 1..=1000"),
        (&["bench", "model", "--csv", "--markdown"], "cannot be used with"),
        (&["bench", "model", "--json", "/"], "--json /: is a directory"),
        (
            &["bench", "model", "--plot", "/no/such/dir/run.svg"],
            "--plot /no/such/dir/run.svg: no directory /no/such/dir",
        ),
        (&["bench", "--op", "gemm", "model"], "the subcommand 'model' cannot be used with '--op"),
    ] {
        expect(&format!("{args:?}"), &dsv3(args), 2, &[says]);
    }
    // The built-in model's context is 16384 tokens.
    let out = dsv3(&["bench", "model", "--backend", "cpu", "-p", "16380", "-n", "8", "-q"]);
    expect(
        "past the context",
        &out,
        2,
        &["--prompt 16380 --gen 8: 16388 tokens exceed the model's context of 16384"],
    );
}

/// Every run recorded in `benches/results/` still reads with this build's schema (a schema change that
/// breaks them must bump the version and say so), and `bench plot` draws its chart again — or, for an ops
/// run saved before rows carried rooflines (one is recorded), says there is nothing to draw.
#[test]
fn recorded_runs_still_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results");
    let charts = tempdir("redraw");
    let mut recorded = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let file = entry.unwrap().path();
        let run: Option<Value> = file
            .extension()
            .is_some_and(|e| e == "json")
            .then(|| serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).ok())
            .flatten()
            .filter(|run: &Value| run["format"] == "dsv3-bench");
        if let Some(run) = run {
            let out = dsv3(&["bench", "compare", path(&file), path(&file), "--fail-on-regression", "0"]);
            expect(path(&file), &out, 0, &["within noise"]);
            let chart = charts.join(format!("{recorded}.svg"));
            let out = dsv3(&["bench", "plot", path(&file), path(&chart)]);
            let rows = run["rows"].as_array().unwrap();
            if run["kind"] == "ops" && rows.iter().all(|r| r["roofline"].is_null()) {
                expect(path(&file), &out, 2, &[path(&file), "no row of the run has a roofline"]);
                assert!(!chart.exists());
            } else {
                expect(path(&file), &out, 0, &[]);
                let svg = std::fs::read_to_string(&chart).unwrap();
                assert!(svg.starts_with("<svg") && svg.contains("roof"), "{}: {svg}", file.display());
            }
            recorded += 1;
        }
    }
    assert!(recorded > 0, "no dsv3-bench run in {}", dir.display());
}

/// Also the defaults: faer beside every GEMM row on the CPU without asking, and every row's GB/s over the
/// bandwidth measured in the run, named above the table.
#[test]
fn bench_ops_times_every_op_of_a_step_and_checks_each_on_a_replica() {
    let dir = tempdir("ops");
    let json_file = dir.join("ops.json");
    let args = ["bench", "ops", "--suite", "quick", "--repetitions", "2", "--seconds", "0.01"];
    let mut args = args.to_vec();
    args.extend(["--context", "64", "--prefill", "16", "--json", path(&json_file)]);
    let out = dsv3(&args);
    let parts = ["embed", "attn.q_a", "attn.cache_append", "attn.mla", "moe.experts.down", "head.sample"];
    let shown = expect("bench ops", &out, 0, &parts);
    // Both phases, every row timed on cpu:0 and its replica passed against the oracle.
    let rows: Vec<&str> =
        shown.lines().filter(|l| l.starts_with("decode") || l.starts_with("prefill")).collect();
    assert!(rows.len() > 2 * 20, "{shown}");
    let run: Value = serde_json::from_str(&std::fs::read_to_string(&json_file).unwrap()).unwrap();
    // The bandwidth the run measured, above the table; each row's GB/s over it in the `% of BW` column.
    let bandwidth = run["devices"][0]["peak"]["bytes_per_s"].as_f64().unwrap();
    assert!(
        shown.contains(&format!(
            "cpu:0 {}: {:.1} GB/s",
            run["devices"][0]["name"].as_str().unwrap(),
            bandwidth / 1e9
        )),
        "{shown}"
    );
    let header = shown.lines().find(|l| l.starts_with("phase")).unwrap();
    assert!(header.contains(" GB/s  % of BW "), "{header}");
    let mut faer = 0;
    for row in &rows {
        let (ours, peer) = row.split_once("  | ").unwrap_or((row, ""));
        assert!(ours.contains("cpu:0") && ours.ends_with("pass"), "not timed and checked: {row}");
        let cells: Vec<&str> = ours.split_whitespace().collect();
        let (gbps, of_bw): (f64, f64) = (cells[4].parse().unwrap(), cells[5].parse().unwrap());
        // Both columns are printed rounded (2 and 1 decimals): they agree to that rounding.
        let expected = 100.0 * gbps * 1e9 / bandwidth;
        assert!((of_bw - expected).abs() <= 0.05 + 100.0 * 0.005e9 / bandwidth, "{row}");
        // faer by default: a ratio beside every `gemm` row, the reason beside the others.
        if peer.starts_with("faer: absent: faer is timed on gemm only") {
            continue;
        }
        assert!(peer.contains("x (faer 0.24 f32 matmul (ours: "), "{row}");
        faer += 1;
    }
    assert!(faer >= 10, "{shown}");
    assert_eq!(run["kind"], "ops");
    let saved = run["rows"].as_array().unwrap();
    let (theirs, ours): (Vec<&Value>, Vec<&Value>) = saved.iter().partition(|r| r["peer"].is_string());
    assert_eq!((ours.len(), theirs.len()), (rows.len(), faer), "{run}");
    assert!(theirs.iter().all(|r| r["name"].as_str().unwrap().ends_with(": peer faer")), "{run}");
    assert!(saved.iter().all(|r| r["unit"] == "calls/s" && r["samples"].as_array().unwrap().len() == 2));
    // A saved op run compares like a model run.
    let compared = dsv3(&["bench", "compare", path(&json_file), path(&json_file)]);
    expect("bench compare ops", &compared, 0, &["attn.mla"]);
    // Bad flags name themselves.
    let bad = dsv3(&["bench", "ops", "--suite", "deepseek-v4"]);
    expect("bench ops --suite deepseek-v4", &bad, 2, &["--suite"]);
    let bad = dsv3(&["bench", "ops", "--suite", "quick", "--batch", "0"]);
    expect("bench ops --batch 0", &bad, 2, &["--batch"]);
    let bad = dsv3(&["bench", "ops", "--suite", "quick", "--peer", "none,torch"]);
    expect("bench ops --peer none,torch", &bad, 2, &["--peer none,torch: `none` stands alone"]);
    let bad = dsv3(&["bench", "ops", "--suite", "quick", "--peer", "numpy"]);
    expect("bench ops --peer numpy", &bad, 2, &["--peer numpy: unknown peer `numpy`"]);
}

/// Peers in the same run: faer beside the CPU's GEMM rows (absent, with the reason, beside the others),
/// timed without being named when another peer is; torch through a python that cannot run it is absent
/// on every row with python's failure, in the table and the saved run. The roofline chart of the same
/// run names its series, the commit and the peer. No peer's speed is judged: only that its figures are
/// there.
#[test]
fn bench_ops_peers_sit_beside_our_rows_or_say_why_not_and_the_roofline_is_drawn() {
    let dir = tempdir("peers");
    let (json_file, svg_file) = (dir.join("ops.json"), dir.join("ops.svg"));
    let args = ["bench", "ops", "--suite", "quick", "--phase", "decode", "--context", "64"];
    let mut args = args.to_vec();
    args.extend(["--repetitions", "2", "--seconds", "0.001", "--peer", "torch", "--python", "/bin/false"]);
    args.extend(["--json", path(&json_file), "--plot", path(&svg_file)]);
    let shown = expect("bench ops --peer", &dsv3(&args), 0, &["peers: the peer's ms over ours"]);
    let rows: Vec<&str> = shown.lines().filter(|l| l.starts_with("decode")).collect();
    assert!(rows.len() > 20, "{shown}");
    let (mut gemms, bin_false) = (0, "absent: /bin/false exited with exit status: 1");
    for row in &rows {
        let cell = |peer: &str| row.split(&format!("| {peer}: ")).nth(1).unwrap_or_default().to_string();
        let (faer, torch) = (cell("faer"), cell("torch"));
        if faer.starts_with("absent: faer is timed on gemm only, not ") {
            // torch times batched GEMMs and attention too: those fail with python's failure.
            let other = torch.starts_with("absent: the torch peer times gemm, batched_gemm and mla");
            assert!(other || torch.starts_with(bin_false), "{row}");
            assert!(!row.contains("attn.mla ") || torch.starts_with(bin_false), "{row}");
        } else {
            assert!(faer.contains("x (faer 0.24 f32 matmul (ours: a="), "{row}");
            assert!(torch.starts_with(bin_false), "{row}");
            gemms += 1;
        }
    }
    assert!(gemms >= 5, "{shown}");

    let run: Value = serde_json::from_str(&std::fs::read_to_string(&json_file).unwrap()).unwrap();
    let saved = run["rows"].as_array().unwrap();
    let peer_rows: Vec<&Value> = saved.iter().filter(|r| r["peer"].is_string()).collect();
    assert_eq!(peer_rows.len(), gemms, "{run}");
    for r in &peer_rows {
        assert!(r["name"].as_str().unwrap().ends_with(": peer faer"), "{r}");
        assert_eq!(r["samples"].as_array().unwrap().len(), 2, "{r}");
    }
    let absent = run["absent_peers"].as_array().unwrap();
    assert_eq!(absent.len(), 2 * rows.len() - gemms, "{run}");
    assert!(absent
        .iter()
        .any(|a| a["peer"] == "torch" && a["reason"].as_str().unwrap().contains("/bin/false")));
    // Our rows carry the op, the device and the roof the chart draws.
    assert!(saved
        .iter()
        .filter(|r| r["peer"].is_null())
        .all(|r| r["op"].is_string() && r["device"] == "cpu:0"));
    // A run with peers compares with itself, peer rows included.
    let compared = dsv3(&["bench", "compare", path(&json_file), path(&json_file)]);
    expect("compare with peers", &compared, 0, &[": peer faer"]);

    let svg = std::fs::read_to_string(&svg_file).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{}", &svg[..svg.len().min(200)]);
    let commit = run["commit"].as_str().unwrap();
    for says in [
        "roofline per op",
        "gemm on cpu:0",
        "mla_attention on cpu:0",
        "FLOPs per byte moved",
        "GFLOP/s",
        "peers at the intensity of our row",
        ">\npeer faer\n<",
    ] {
        assert!(svg.contains(says), "the chart lacks {says:?}");
    }
    assert!(svg.contains(&format!("commit {commit}")) && svg.contains("cpu:0 f32"), "{svg}");
    assert!(svg.matches("<circle").count() >= gemms, "a point per GEMM row at least");
    // torch timed nothing: no series, no legend entry for it.
    assert!(!svg.contains("peer torch"), "{svg}");
}

/// `bench model --peer transformers` through a python that cannot run it: every cell's peer is absent
/// with python's failure (batch-1 cells) or the batch limit (others), in the table and the saved run.
#[test]
fn bench_model_peer_absent_says_why() {
    let dir = tempdir("model-peer");
    let json_file = dir.join("run.json");
    let args = ["bench", "model", "-p", "4", "-n", "2", "-b", "1,2", "--repetitions", "1", "--warmup", "0"];
    let mut args = args.to_vec();
    args.extend(["--peer", "transformers", "--python", "/bin/false", "--json", path(&json_file)]);
    let shown = expect(
        "bench model --peer",
        &dsv3(&args),
        0,
        &[
            "\npeers:\n",
            "decode p4 n2 b1: peer transformers: absent: /bin/false exited with exit status: 1",
            "prefill p4 n2 b2: peer transformers: absent: the transformers peer generates one sequence",
        ],
    );
    let run: Value = serde_json::from_str(&std::fs::read_to_string(&json_file).unwrap()).unwrap();
    assert_eq!(run["absent_peers"].as_array().unwrap().len(), 4, "{shown}");
    assert_eq!(run["rows"].as_array().unwrap().len(), 4, "ours only: {shown}");
}

/// `bench model --peer transformers` whose python answers (a stand-in that prints the script's answer,
/// so that no torch is needed): the batch-1 cell's peer rows are listed with ours over theirs, saved with
/// their samples, and drawn on the tok/s chart with a legend entry of their own.
#[test]
fn bench_model_peer_rows_are_saved_and_drawn() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir("model-peer-drawn");
    let (json_file, svg_file, python) = (dir.join("run.json"), dir.join("run.svg"), dir.join("python"));
    let answer =
        r#"{"peer": "stand-in transformers", "prefill_samples": [100, 110], "decode_samples": [50, 60]}"#;
    std::fs::write(&python, format!("#!/bin/sh\necho '{answer}'\n")).unwrap();
    std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();
    let args = ["bench", "model", "-p", "4", "-n", "2", "-b", "1,2", "--repetitions", "2", "--warmup", "0"];
    let mut args = args.to_vec();
    args.extend(["--peer", "transformers", "--python", path(&python)]);
    args.extend(["--json", path(&json_file), "--plot", path(&svg_file)]);
    expect(
        "bench model --peer (stand-in)",
        &dsv3(&args),
        0,
        &[
            "decode p4 n2 b1: peer transformers (stand-in transformers): 55.00 ± 7.07 tok/s, ours ",
            "prefill p4 n2 b1: peer transformers (stand-in transformers): 105.00 ± 7.07 tok/s, ours ",
            "decode p4 n2 b2: peer transformers: absent: the transformers peer generates one sequence",
        ],
    );
    let run: Value = serde_json::from_str(&std::fs::read_to_string(&json_file).unwrap()).unwrap();
    let theirs: Vec<&Value> =
        run["rows"].as_array().unwrap().iter().filter(|r| r["peer"].is_string()).collect();
    assert_eq!(theirs.len(), 2, "{run}");
    assert_eq!(theirs[1]["name"], "decode p4 n2 b1: peer transformers", "{run}");
    assert_eq!(theirs[1]["samples"], json!([50.0, 60.0]), "{run}");
    let svg = std::fs::read_to_string(&svg_file).unwrap();
    // One legend entry per panel (prefill, decode) for the peer, beside our series'.
    assert_eq!(svg.matches(">\np4 n2 transformers\n<").count(), 2, "{svg}");
    assert_eq!(svg.matches(">\np4 n2\n<").count(), 2, "{svg}");
}
