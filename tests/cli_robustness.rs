//! The `dsv3` binary against hostile but plausible input: closed and full stdout, arguments that are not
//! UTF-8, special files as outputs, impossible shapes and sizes, endless files, tiny temperatures,
//! unavailable backends and unusable cache directories, a closed stderr. Each row asserts the exit status,
//! that nothing panicked, and what stderr says; the special-file rows also check the file is still what it
//! was.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_dsv3");
/// `out::BROKEN_PIPE_STATUS`: a closed stdout ends the command quietly, as SIGPIPE would.
const BROKEN_PIPE: i32 = 141;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures() -> PathBuf {
    root().join("model/tests/fixtures")
}

fn dsv3(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(root()).stdin(Stdio::null());
    cmd
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Exit status `code`, no panic, and stderr containing each of `says`.
fn expect(what: &str, out: &Output, code: i32, says: &[&str]) {
    let err = stderr(out);
    assert!(!err.contains("panicked"), "{what}: panicked:\n{err}");
    assert_eq!(out.status.code(), Some(code), "{what}: exit status {:?}, stderr:\n{err}", out.status);
    for s in says {
        assert!(err.contains(s), "{what}: stderr lacks {s:?}:\n{err}");
    }
}

fn tempdir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Commands whose output a reader abandons (`| head -1`) or that write to a full disk.
fn printing_commands() -> Vec<Vec<String>> {
    let config = fixtures().join("configs/deepseek-v3.json");
    [
        vec!["devices"],
        vec!["--help"],
        vec!["inspect", "--config", path_str(&config), "--json"],
        vec!["bench", "--op", "gemm", "--shape", "8x8x8", "--seconds", "0.01", "--json"],
        vec!["conformance", "--backend", "cpu", "--quick", "--op", "add"],
        vec!["golden", "--backend", "cpu", "--path", "f32"],
        vec![
            "generate",
            "--model",
            path_str(&fixtures().join("tiny-dsv3")),
            "--tokens",
            "1,2",
            "--max-new-tokens",
            "2",
            "--json",
        ],
    ]
    .into_iter()
    .map(|c| c.into_iter().map(String::from).collect())
    .collect()
}

#[test]
fn a_closed_or_full_stdout_is_an_ordinary_exit() {
    for args in printing_commands() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // The reader has gone before the first write.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = dsv3(&args).stdout(writer).output().unwrap();
        expect(&format!("{args:?} | (closed)"), &out, BROKEN_PIPE, &[]);
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let out = dsv3(&args).stdout(full).output().unwrap();
        expect(&format!("{args:?} > /dev/full"), &out, 2, &["writing to stdout", "No space left on device"]);
    }
}

#[test]
fn arguments_that_are_not_utf8() {
    let bad = || OsString::from_vec(b"caf\xe9".to_vec());
    let run = |args: Vec<OsString>| Command::new(BIN).args(args).current_dir(root()).output().unwrap();
    let os = |s: &str| OsString::from(s);
    let out = run(vec![os("generate"), os("--prompt"), bad()]);
    expect("generate --prompt <latin-1>", &out, 2, &["--prompt", "not valid UTF-8"]);
    let out = run(vec![os("bench"), os("--op"), bad()]);
    expect("bench --op <latin-1>", &out, 2, &["--op", "not valid UTF-8"]);
    // A path may be any bytes: this one is simply absent.
    let out = run(vec![os("inspect"), os("--config"), bad()]);
    expect("inspect --config <latin-1 path>", &out, 2, &["caf", "No such file"]);
    let out = run(vec![bad()]);
    expect("<latin-1 subcommand>", &out, 2, &["Usage: dsv3"]);
    // Every path option takes any bytes: each of these fails on the missing file, named, not on UTF-8.
    let dir = || OsString::from_vec(b"/nonexistent/caf\xe9".to_vec());
    for args in [
        vec![os("generate"), os("--model"), dir(), os("--tokens"), os("1")],
        vec![os("op"), os("--cases"), dir()],
        vec![os("golden"), os("--backend"), os("cpu"), os("--path"), os("f32"), os("--fixtures"), dir()],
    ] {
        let what = format!("{args:?}");
        expect(&what, &run(args), 2, &["/nonexistent/caf"]);
    }
}

#[test]
fn output_files_that_are_not_regular_are_written_through_not_replaced() {
    let dir = tempdir("special");
    let model = fixtures().join("tiny-dsv3");
    let logits = |out: &Path| {
        dsv3(&["logits", "--model", path_str(&model), "--tokens", "1,2", "--out", path_str(out)])
    };

    // A symlink stays a symlink; its target receives the file.
    let target = dir.join("target.safetensors");
    std::fs::write(&target, b"old").unwrap();
    let link = dir.join("link.safetensors");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    expect("logits --out symlink", &logits(&link).output().unwrap(), 0, &[]);
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the symlink was replaced");
    assert!(std::fs::read(&target).unwrap().len() > 16, "the target was not written");

    // A FIFO stays a FIFO, and its reader gets the file.
    let fifo = dir.join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    expect("logits --out fifo", &logits(&fifo).output().unwrap(), 0, &[]);
    let received = reader.join().unwrap();
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(), "the FIFO was replaced");
    let header = u64::from_le_bytes(received[..8].try_into().unwrap()) as usize;
    assert!(
        String::from_utf8_lossy(&received[8..8 + header]).contains("logits"),
        "the reader got no safetensors"
    );

    // A directory is refused; a regular file is replaced whole, with no temporary left beside it.
    expect("logits --out dir", &logits(&dir).output().unwrap(), 2, &["is a directory"]);
    let regular = dir.join("regular.safetensors");
    std::fs::write(&regular, b"old").unwrap();
    expect("logits --out file", &logits(&regular).output().unwrap(), 0, &[]);
    assert!(std::fs::read(&regular).unwrap().len() > 16);
    let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["fifo", "link.safetensors", "regular.safetensors", "target.safetensors"]);

    // The conformance reports go through the same writer.
    let md_target = dir.join("support.md");
    let md_link = dir.join("support-link.md");
    std::os::unix::fs::symlink(&md_target, &md_link).unwrap();
    let out = dsv3(&[
        "conformance",
        "--backend",
        "cpu",
        "--quick",
        "--op",
        "add",
        "--markdown",
        path_str(&md_link),
    ])
    .output()
    .unwrap();
    expect("conformance --markdown symlink", &out, 0, &[]);
    assert!(std::fs::symlink_metadata(&md_link).unwrap().file_type().is_symlink());
    assert!(std::fs::read_to_string(&md_target).unwrap().contains("add"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn impossible_sizes_are_refused_before_allocating() {
    let gemm = |shape: &str| dsv3(&["bench", "--op", "gemm", "--shape", shape]).output().unwrap();
    let max = u64::MAX.to_string();
    for shape in ["99999999x99999999x99999999", &format!("{max}x{max}x{max}"), &format!("{max}x1x1")] {
        expect(&format!("bench --shape {shape}"), &gemm(shape), 2, &["--shape", "bytes, more than"]);
    }
    for shape in ["0x2048x7168", "512x0x7168", "512x2048x0"] {
        expect(&format!("bench --shape {shape}"), &gemm(shape), 2, &["at least 1"]);
    }
    // A DeepSeek-V3 config with 64 times its layers (45 TB of weights): larger than any machine.
    let dir = tempdir("memory");
    let text = std::fs::read_to_string(fixtures().join("configs/deepseek-v3.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&text).unwrap();
    config["num_hidden_layers"] = serde_json::json!(61 * 64);
    let file = dir.join("huge.json");
    std::fs::write(&file, config.to_string()).unwrap();
    let out = dsv3(&["generate", "--random-weights", "--config", path_str(&file), "--tokens", "1"])
        .output()
        .unwrap();
    expect("generate --random-weights (45 TB)", &out, 2, &["needs", "GB short"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn endless_files_and_out_of_range_numbers_are_errors() {
    let out = dsv3(&["inspect", "--config", "/dev/zero"]).output().unwrap();
    expect("inspect --config /dev/zero", &out, 2, &["/dev/zero", "larger than"]);
    let model = fixtures().join("tiny-dsv3");
    let long = vec!["1"; 5121].join(","); // tiny-dsv3's context is 5120
    let out = dsv3(&["logits", "--model", path_str(&model), "--tokens", &long, "--out", "/nonexistent/l"])
        .output()
        .unwrap();
    expect("logits past the context", &out, 2, &["5121 tokens exceed the model's context of 5120"]);
    for s in ["-1", "NaN", "1e300"] {
        let out = dsv3(&["bench", "--op", "gemm", "--shape", "8x8x8", "--seconds", s]).output().unwrap();
        expect(&format!("bench --seconds {s}"), &out, 2, &["--seconds", "must be in (0, 3600]"]);
    }
    for t in ["1e-40", "-1", "NaN"] {
        let out = dsv3(&["generate", "--model", path_str(&model), "--tokens", "1,2", "--temperature", t])
            .output()
            .unwrap();
        expect(&format!("generate --temperature {t}"), &out, 2, &["temperature"]);
    }
}

#[test]
fn a_backend_asked_for_by_name_must_be_present() {
    // A CANN directory whose libascendcl.so is not a library: the Ascend backend is unavailable here for
    // certain, whatever else the machine has.
    let dir = tempdir("ascend");
    std::fs::write(dir.join("libascendcl.so"), b"not a library").unwrap();
    for args in [
        &["conformance", "--backend", "ascend", "--quick", "--op", "gemm"][..],
        &["bench", "--op", "gemm", "--backend", "ascend", "--shape", "8x8x8"],
    ] {
        let out = dsv3(args).env("DSV3_ASCEND_LIB_DIR", &dir).output().unwrap();
        expect(&format!("{args:?}"), &out, 2, &["--backend ascend", "not usable"]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn placement_rules_that_cannot_mean_anything_are_refused_before_loading() {
    let model = fixtures().join("tiny-dsv3");
    for (rules, says) in [
        ("experts=cpu:3", &["`cpu:3`", "cpu has 1 device(s)", "present: "][..]),
        ("experts=nosuch", &["`nosuch:0`", "unknown backend"]),
        ("expert=cpu", &["unknown part `expert`"]),
        ("layers.7=cpu", &["`layers.7=cpu` matches no part of this model (3 layers"]),
        ("layers.1.experts.16-20=cpu", &["`layers.1.experts.16-20=cpu` matches no part"]),
        ("experts", &["expected PATTERN=DEVICE"]),
    ] {
        let args =
            ["generate", "--model", path_str(&model), "--tokens", "1", "--backend", "cpu", "--place", rules];
        let out = dsv3(&args).output().unwrap();
        expect(&format!("--place {rules}"), &out, 2, says);
    }
}

/// The host emulator compiles kernels into the cache directory; one that cannot be written falls back to a
/// private temporary directory (said once), and an empty HOME writes nothing into the working directory.
#[test]
fn an_unusable_kernel_cache_falls_back() {
    let cwd = tempdir("cache-cwd");
    let run = |home: &str| {
        dsv3(&["conformance", "--backend", "cuda-emu", "--quick", "--op", "add", "--case", "a=f32"])
            .env("HOME", home)
            .env_remove("XDG_CACHE_HOME")
            .env_remove("DSV3_KERNEL_CACHE")
            .current_dir(&cwd)
            .output()
            .unwrap()
    };
    let out = run("/proc");
    expect(
        "HOME=/proc conformance --backend cuda-emu",
        &out,
        0,
        &["WARN", "kernel cache /proc/.cache/dsv3/kernels is not usable"],
    );
    assert_eq!(stderr(&out).matches("kernel cache").count(), 1, "{}", stderr(&out));
    let out = run("");
    expect("HOME='' conformance --backend cuda-emu", &out, 0, &[]);
    assert_eq!(std::fs::read_dir(&cwd).unwrap().count(), 0, "HOME='' wrote into the working directory");
    std::fs::remove_dir_all(&cwd).unwrap();

    // A damaged library in the cache is compiled again, not failed on at every run.
    let cache = tempdir("cache-damaged");
    let run = || {
        dsv3(&["conformance", "--backend", "cuda-emu", "--quick", "--op", "add", "--case", "a=f32"])
            .env("DSV3_KERNEL_CACHE", &cache)
            .output()
            .unwrap()
    };
    expect("conformance --backend cuda-emu (fills the cache)", &run(), 0, &[]);
    let mut damaged = 0;
    for entry in std::fs::read_dir(&cache).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "so") {
            std::fs::write(&path, b"truncated by a full disk").unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0, "the emulator cached no library in {}", cache.display());
    expect("conformance --backend cuda-emu (damaged cache)", &run(), 0, &[]);
    std::fs::remove_dir_all(&cache).unwrap();
}

/// The built-in model's greedy run of "Hello" chooses id 129011, an embedding row the tokenizer has no
/// entry for: the run used to end there (exit status 2, the text lost). It streams as a placeholder now,
/// and `inspect` reports the gap.
#[test]
fn ids_without_a_token_stream_as_placeholders() {
    let args = [
        "generate",
        "--backend",
        "cpu",
        "--prompt",
        "Hello",
        "--temperature",
        "0",
        "--max-new-tokens",
        "4",
        "--json",
    ];
    let out = dsv3(&args).output().unwrap();
    expect("generate --prompt Hello --temperature 0", &out, 0, &[]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let tokens: Vec<u64> = last["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap()).collect();
    assert_eq!(tokens.len(), 4, "{stdout}");
    let unspellable: Vec<u64> = tokens.iter().copied().filter(|&t| t >= 128_815).collect();
    assert!(
        !unspellable.is_empty(),
        "the run no longer meets an id without a token; pick a prompt that does: {stdout}"
    );
    for id in unspellable {
        assert!(last["text"].as_str().unwrap().contains(&format!("<unk:{id}>")), "{stdout}");
    }

    let config = fixtures().join("configs/deepseek-v3.json");
    let out = dsv3(&["inspect", "--config", path_str(&config)]).output().unwrap();
    expect("inspect --config deepseek-v3.json", &out, 0, &[]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.matches("465 embedding rows have no token").count(), 1, "{stdout}");
}

/// Finite weights can still overflow: an lm_head of bf16's largest value makes the logits ±Inf or NaN.
/// They used to be written with exit status 0; now the op and tensor are named and nothing is written.
#[test]
fn non_finite_logits_are_reported_not_written() {
    let src = fixtures().join("tiny-dsv3-bf16");
    let dir = tempdir("overflow");
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let model = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let largest_bf16 = 0x7F7Fu16.to_le_bytes();
    let tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = model
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            let mut data = t.data().to_vec();
            if name == "lm_head.weight" {
                data.chunks_exact_mut(2).for_each(|c| c.copy_from_slice(&largest_bf16));
            }
            (name, t.dtype(), t.shape().to_vec(), data)
        })
        .collect();
    let views = tensors.iter().map(|(name, dtype, shape, data)| {
        (name.clone(), safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap())
    });
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    let out_file = dir.join("logits.safetensors");
    let args = ["logits", "--model", path_str(&dir), "--tokens", "1,2,3", "--out", path_str(&out_file)];
    let out = dsv3(&args).output().unwrap();
    expect(
        "logits with an overflowing lm_head",
        &out,
        2,
        &["op `lm_head`", "tensor `logits`", "not written"],
    );
    assert!(!out_file.exists(), "non-finite logits were written");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A closed stderr is no reason to fail: `eprintln!` would panic (exit status 101) on a pipe whose reader
/// has gone. The run's own result (exit status, stdout) is what it would have been. With stderr gone a
/// panic message cannot be read, so the exit status is what tells.
#[test]
fn a_closed_stderr_changes_nothing_else() {
    let model = fixtures().join("tiny-dsv3");
    let generate =
        ["generate", "--model", path_str(&model), "--tokens", "1,2", "--max-new-tokens", "2", "--json"];
    for (args, code) in [
        (&generate[..], 0),
        (&["bench", "--op", "nosuch"][..], 2), // a usage error: clap's message
        (&["inspect", "--config", "/nonexistent.json"][..], 2), // a command's error message
        (&["conformance", "--backend", "cpu", "--quick", "--op", "add", "--progress"][..], 0),
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = dsv3(args).stderr(writer).output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?} 2>(closed pipe)");
        // The descriptor itself closed (`2>&-`): a write fails with EBADF.
        let out = Command::new("sh")
            .arg("-c")
            .arg("exec \"$0\" \"$@\" 2>&-")
            .arg(BIN)
            .args(args)
            .current_dir(root())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?} 2>&-");
        if code == 0 && args[0] == "generate" {
            let stdout = String::from_utf8(out.stdout).unwrap();
            let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
            assert_eq!(last["tokens"].as_array().unwrap().len(), 2, "{stdout}");
        }
    }
}
