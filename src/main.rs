//! `dsv3`: run DeepSeek-V3-class models on whatever hardware is present, check every backend against the
//! CPU oracle, and measure each op.

use std::ffi::{OsStr, OsString};
use std::path::Path;

mod bench;
mod conformance;
mod device_specs;
mod devices;
mod inspect;
mod model_cmd;
mod op_cmd;
mod out;
mod registry;

const USAGE: &str = "\
dsv3 — DeepSeek-V3-class inference over one backend layer

USAGE:
    dsv3 devices
        Every backend compiled in, its devices and capabilities, or why it is unavailable.
    dsv3 conformance [--backend all|cpu|NAME,...] [--op NAME] [--case TEXT] [--quick] [--mode test|perf|support]
                     [--json FILE] [--markdown FILE] [--verify-xfail] [--progress] [--repeat N]
        Run every op case (the full set: DeepSeek-V3 shapes; --quick: edge shapes only) on the selected
        backends against the CPU reference (oracle). Exit status 1 on any failure. --markdown writes the
        support matrix (op × backend × dtype); --verify-xfail fails on expected failures that now pass.
        --mode perf times each case (ms, GFLOP/s, GB/s, % of peak); --mode support only asks each device.
        --repeat N (stress) runs each case N times on fresh buffers and fails if any run's outputs differ
        bitwise from the first (races, reads of uninitialised memory).
    dsv3 op --cases FILE.safetensors [--case NAME] [--backend all|NAME,...] [--json] [--write-actual OUT]
        Run the cases of a case file (inputs, expected outputs and parameters, e.g. written by PyTorch;
        format in conformance/fixtures/CASES.md) on the selected backends (default all, cpu-ref included)
        and compare each with its expected outputs under the op's bound. One row per case and backend;
        exit status 1 on any failure. --json: last stdout line is {\"results\":[{\"case\",\"op\",
        \"backend\",\"status\",\"nmse\",\"max_abs\",\"cos_dist\",...}]}. --write-actual (one backend)
        saves its outputs under the expected tensors' names.
    dsv3 bench --op OP [--backend NAME] [--dtype D] [--shape MxNxK] [--json]
        Time one op: ms, GFLOP/s, GB/s and % of the device's measured peak. For gemm, D is
        A/B/C dtypes, e.g. f32, bf16, fp8 (block-FP8 weights, f32 activations) or w8a8
        (FP8 activations and weights); --shape MxNxK means C[M,N] = A[M,K]·B[N,K]ᵀ.
    dsv3 generate [--model DIR | --random-weights --config FILE] (--prompt TEXT | --tokens 1,2,3)
                  [--chat] [--system TEXT]
                  [--max-new-tokens N] [--temperature T] [--top-p P] [--seed S]
                  [--backend auto|NAME] [--place RULES] [--path fast|bf16|w8a8|f32] [--json] [--ignore-eos]
        Generate from a DeepSeek-V3 / V2 checkpoint (HF layout, FP8 or BF16), streaming text to stdout and
        prompt / decode tokens per second to stderr. Without --model: a small built-in model of the same
        architecture with random weights and the real tokenizer; --random-weights --config FILE times any
        shape (hashed weights, no download). --temperature 0 is greedy (default 0.6,
        top-p 0.95); --max-new-tokens defaults to 4096 (limit 8192). --path fast picks W8A8 for FP8
        checkpoints on devices with native FP8 arithmetic, else bf16 activations. --json: last stdout line is
        {\"tokens\":[new ids],\"text\":...,\"prefill_tok_s\":...,\"decode_tok_s\":...}.
        --place 'experts=cpu,*=cuda:0' puts parts of the model on other devices than --backend's: rules
        PATTERN=DEVICE, first match wins, parts embed, norm, head and per layer attn, mlp, router, shared,
        experts (`experts` alone: in every layer; `layers.0-2`, `layers.*.experts`); DEVICE as
        `dsv3 devices` prints it. Parts no rule names stay on --backend's device. --place auto plans over
        the devices present (see inspect) and fails before loading when the model does not fit.
    dsv3 logits --model DIR --tokens IDS [--backend B] [--place RULES] [--path f32|bf16|w8a8] --out FILE.safetensors
        Write `logits` [T, V] f32 for every prompt position (default path f32), to compare with PyTorch.
    dsv3 inspect (--model DIR | --config FILE) [--place RULES|auto [--assume DEVICES]] [--json]
        Architecture, parameters (total, active, MTP), weight bytes by dtype, latent KV-cache bytes per
        token, and whether it fits on each device present. --json: last stdout line is a JSON object.
        --place adds the plan: per device its parts, weight bytes, cache per 1K tokens, share of the decode
        step and fit (or shortfall), and the predicted decode / prefill tok/s (parts no rule names go to
        the first device). --place auto plans it: attention and its cache first on the fastest device,
        then shared experts, dense layers, head, routers, routed experts by layer, spilling to the next.
        --assume 'cuda:0=H200,cpu=768GB@300GB/s' plans for these devices instead of the present ones:
        DEVICE=GPU (a datasheet name: H200, H100, MI300X, …) or DEVICE=MEMORY@BANDWIDTH[@FLOPS]
        (GB, GiB, TB; GB/s, TB/s; TFLOPS — without it the prefill rate is unknown).
    dsv3 golden [--backend B] [--place RULES] [--path f32|bf16|w8a8|all] [--fixtures DIR]
        Run the golden fixtures (logits from HF transformers, model/tests/fixtures) on one backend and
        print the agreement against each path's derived bound. Exit status 1 on any failure.
";

/// Mesa's Vulkan drivers (lavapipe included) load the Wayland client library, which writes "error:
/// XDG_RUNTIME_DIR is invalid or not set in the environment." once per Vulkan instance when that
/// variable is unset, as on servers and in containers. It only looks for a display to draw on, which dsv3
/// never does; an absolute path (the temporary directory) keeps it quiet. Set before any thread starts.
fn quiet_wayland_probe() {
    if !std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| std::path::Path::new(&d).is_absolute()) {
        std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
}

fn main() {
    quiet_wayland_probe();
    // `args_os`: `std::env::args` panics on an argument that is not UTF-8.
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let code = match args.first().and_then(|a| a.to_str()) {
        Some("devices") => devices::run(),
        Some("conformance") => conformance::run(&args[1..]),
        Some("op") => op_cmd::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("generate") => model_cmd::run_generate(&args[1..]),
        Some("logits") => model_cmd::run_logits(&args[1..]),
        Some("golden") => model_cmd::run_golden(&args[1..]),
        Some("inspect") => inspect::run(&args[1..]),
        Some("-h" | "--help" | "help") => {
            finish("help", out::stdout(format_args!("{USAGE}")).map(|()| 0).map_err(String::from))
        }
        _ => {
            eprint!("{USAGE}");
            2
        }
    };
    std::process::exit(code);
}

/// The exit status of a subcommand: its own, or 2 with the error on stderr.
pub fn finish(command: &str, result: Result<i32, String>) -> i32 {
    result.unwrap_or_else(|e| {
        eprintln!("dsv3 {command}: {e}");
        2
    })
}

/// Options whose value is a file or directory: any bytes the OS allows (`--json` is a file name for
/// `conformance`, a flag elsewhere). Every other value must be UTF-8.
const PATH_OPTIONS: &[&str] =
    &["model", "config", "out", "json", "markdown", "fixtures", "cases", "write-actual"];

/// `--name value` options after a subcommand.
pub struct Options {
    pairs: Vec<(String, Option<OsString>)>,
}

impl Options {
    /// Parses `--flag` and `--key value`; `flags` lists the options that take no value. A name, or the
    /// value of an option not in [`PATH_OPTIONS`], that is not UTF-8 is an error naming the option.
    pub fn parse(args: &[OsString], flags: &[&str]) -> Result<Options, String> {
        let mut pairs = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let Some(name) = a.to_str().and_then(|a| a.strip_prefix("--")) else {
                return Err(format!("unexpected argument `{}`", a.to_string_lossy()));
            };
            if flags.contains(&name) {
                pairs.push((name.to_string(), None));
            } else {
                let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
                if value.to_str().is_none() && !PATH_OPTIONS.contains(&name) {
                    return Err(format!("--{name}: `{}` is not valid UTF-8", value.to_string_lossy()));
                }
                pairs.push((name.to_string(), Some(value.clone())));
            }
        }
        Ok(Options { pairs })
    }

    fn raw(&self, name: &str) -> Option<&OsStr> {
        self.pairs.iter().rev().find(|(n, _)| n == name).and_then(|(_, v)| v.as_deref())
    }

    /// A text value (UTF-8, checked by [`Options::parse`]).
    pub fn value(&self, name: &str) -> Option<&str> {
        self.raw(name).and_then(OsStr::to_str)
    }

    /// A path value, as the OS gave it.
    pub fn path(&self, name: &str) -> Option<&Path> {
        debug_assert!(PATH_OPTIONS.contains(&name), "--{name} is not a path option");
        self.raw(name).map(Path::new)
    }

    pub fn flag(&self, name: &str) -> bool {
        self.pairs.iter().any(|(n, v)| n == name && v.is_none())
    }

    /// Fails on any option not in `known`.
    pub fn only(&self, known: &[&str]) -> Result<(), String> {
        match self.pairs.iter().find(|(n, _)| !known.contains(&n.as_str())) {
            Some((n, _)) => Err(format!("unknown option --{n}")),
            None => Ok(()),
        }
    }
}
