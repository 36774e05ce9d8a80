//! The command line people expect: help for every command (carrying the long descriptions), the
//! version, "did you mean" for a misspelt command or option, shell completions, and log levels (`-q`,
//! `-v`, `RUST_LOG`) that change stderr only — a `--json` last line on stdout stays what it was.

use std::process::{Command, Output};

/// The binary with `RUST_LOG` as given (unset by default, whatever the caller's environment holds).
fn dsv3_logging(args: &[&str], rust_log: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dsv3"));
    cmd.args(args).current_dir(env!("CARGO_MANIFEST_DIR")).env_remove("RUST_LOG");
    if let Some(filter) = rust_log {
        cmd.env("RUST_LOG", filter);
    }
    cmd.output().expect("dsv3 runs")
}

fn dsv3(args: &[&str]) -> Output {
    dsv3_logging(args, None)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_and_version_go_to_stdout_with_status_0() {
    let out = dsv3(&["generate", "--help"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let help = text(&out.stdout);
    for s in ["--place", "experts=cpu", "--temperature", "--random-weights", "prefill_tok_s", "-q, --quiet"] {
        assert!(help.contains(s), "generate --help lacks {s:?}:\n{help}");
    }
    // `dsv3 help CMD` is the same text; `dsv3 --help` lists every command.
    assert_eq!(text(&dsv3(&["help", "generate"]).stdout), help);
    let top = text(&dsv3(&["--help"]).stdout);
    for cmd in
        ["devices", "conformance", "op", "bench", "generate", "logits", "inspect", "golden", "completions"]
    {
        assert!(top.contains(&format!("\n  {cmd} ")), "dsv3 --help lacks {cmd}:\n{top}");
    }
    let out = dsv3(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), format!("dsv3 {}\n", env!("CARGO_PKG_VERSION")));
    // No command at all: the help, on stderr, as a usage error.
    let out = dsv3(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty() && text(&out.stderr).contains("Usage: dsv3"), "{}", text(&out.stderr));
}

#[test]
fn a_typo_gets_a_suggestion_and_status_2() {
    for (args, says) in [
        (&["generat", "--prompt", "Hi"][..], "'generate'"),
        (&["generate", "--promt", "Hi"], "'--prompt'"),
        (&["conformance", "--quik"], "'--quick'"),
    ] {
        let out = dsv3(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("similar") && err.contains(says), "{args:?}: no suggestion of {says}:\n{err}");
    }
}

#[test]
fn values_are_checked_before_anything_runs_with_the_option_named() {
    for (args, says) in [
        (&["bench", "--op", "gem"][..], "--op gem: unknown op (known: "),
        (&["conformance", "--mode", "fast"], "--mode fast: expected test, perf or support"),
        (&["conformance", "--repeat", "0"], "--repeat 0: expected a count ≥ 1"),
        (
            &["generate", "--tokens", "1", "--max-new-tokens", "9000"],
            "--max-new-tokens 9000: must be in 1..=8192",
        ),
        (&["generate", "--tokens", "1", "--seed", "x"], "--seed: `x` is not a number"),
        (&["generate", "--tokens", "1,x"], "--tokens: `x` is not a token id"),
        (&["generate", "--tokens", "1", "--path", "f16"], "--path f16: expected f32, bf16, w8a8 or fast"),
        (&["golden", "--path", "fast"], "--path fast: expected f32, bf16, w8a8 or all"),
        (&["bench", "--op", "gemm", "--dtype", "f32/f33/f32"], "--dtype: unknown operand `f33`"),
        (&["bench", "--op", "gemm", "--impl", "fast"], "'fast' for '--impl <IMPL>'"),
        (
            &["bench", "--op", "gemm", "--shape", "8x8x8", "--impl", "ours"],
            "--impl picks the CUDA backend's GEMM",
        ),
        (&["bench", "--op", "add", "--backend", "cuda", "--impl", "ours"], "needs --op gemm --backend cuda"),
        (&["generate", "--prompt", "a", "--tokens", "1"], "cannot be used with"),
        (&["generate", "--config", "c.json", "--tokens", "1"], "--random-weights"),
        (&["inspect", "--config", "c.json", "--assume", "cuda:0=H200"], "--place"),
    ] {
        let out = dsv3(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: stderr lacks {says:?}:\n{err}");
    }
}

#[test]
fn completions_are_a_script_for_the_shell() {
    let out = dsv3(&["completions", "bash"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let script = text(&out.stdout);
    assert!(script.contains("complete -F") && script.contains("dsv3"), "{script}");
    for s in ["generate", "--max-new-tokens", "--place"] {
        assert!(script.contains(s), "the bash script lacks {s}");
    }
    let out = dsv3(&["completions", "fish"]);
    assert!(text(&out.stdout).contains("complete -c dsv3"), "{}", text(&out.stdout));
    let out = dsv3(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Log lines (here the model line of `generate`) follow `-q` / `-v` / `RUST_LOG` on stderr; stdout's JSON
/// line is the same whatever the level, and the tokens-per-second line is a result, printed at every level.
#[test]
fn log_levels_change_stderr_only() {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/model/tests/fixtures/tiny-dsv3");
    let run = |level: &[&str], rust_log: Option<&str>| {
        let mut args = vec![
            "generate",
            "--model",
            model,
            "--tokens",
            "1,2",
            "--max-new-tokens",
            "3",
            "--ignore-eos",
            "--json",
        ];
        args.extend(level);
        let out = dsv3_logging(&args, rust_log);
        assert_eq!(out.status.code(), Some(0), "{level:?}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert_eq!(stdout.lines().count(), 1, "{level:?}: stdout is the JSON line alone: {stdout}");
        let json: serde_json::Value = serde_json::from_str(stdout.trim_end()).unwrap();
        (json["tokens"].clone(), text(&out.stderr))
    };
    let model_line = "model: deepseek";
    let (tokens, err) = run(&[], None);
    assert!(err.contains(model_line) && err.contains("INFO"), "{err}");
    let (quiet_tokens, quiet) = run(&["-q"], None);
    assert!(!quiet.contains(model_line) && !quiet.contains("INFO"), "-q: {quiet}");
    let (verbose_tokens, verbose) = run(&["-v"], None);
    assert!(verbose.contains(model_line), "-v: {verbose}");
    // RUST_LOG decides over -v.
    let (_, filtered) = run(&["-v"], Some("warn"));
    assert!(!filtered.contains(model_line), "RUST_LOG=warn -v: {filtered}");
    for err in [&err, &quiet, &verbose, &filtered] {
        assert!(err.contains("prompt: 2 tokens") && err.contains("decode: 2 tokens"), "{err}");
    }
    assert_eq!((&quiet_tokens, &verbose_tokens), (&tokens, &tokens));
}
