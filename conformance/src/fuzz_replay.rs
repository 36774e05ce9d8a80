//! The fuzz targets (`fuzz/`, `cargo +nightly fuzz run NAME`) replayed on stable in every `cargo test`:
//! each committed corpus file of a target, then a fixed-seed mutation loop over that corpus, through the
//! same entry function the fuzz target calls. An input passes when the entry returns; a panic or an input
//! that runs past [`HANG`] fails the test with the input printed, so it can be added to the corpus and
//! replayed. The entry functions live with the parsers they exercise (`dsv3_model::fuzzing`,
//! `dsv3_conformance::fuzzing`); this is the one loop their tests share.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A fuzz target's entry point: any bytes in, nothing out; it must return, without panicking.
pub type Entry = fn(&[u8]);

/// Mutated inputs per target. Each target's loop takes well under a few seconds in the dev profile.
pub const MUTATIONS: usize = 2000;
/// No single input may take this long (the chat template's fuel and the config size cap bound them far
/// below it); past it the input is reported as a hang.
pub const HANG: Duration = Duration::from_secs(20);

/// `fuzz/corpus/` at the repository root; a target's corpus is the directory named after it.
pub fn corpus_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

/// The committed inputs of `target`, in file-name order.
pub fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = corpus_root().join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// xorshift64*: a fixed sequence, the same on every machine, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that mean something to the parsers: separators, brackets, digits, Jinja delimiters, extremes.
const INTERESTING: &[u8] = b"\x00\xff\x7f\x80{}[]\"',:=x@-.*%#09 \n\\";

/// One to four edits of `seed`: a bit flip, an interesting byte, an inserted or deleted run, a duplicated
/// chunk, a cut, or bytes spliced in from another corpus entry.
fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = out.len();
        let at = rng.below(len + 1);
        match rng.below(7) {
            0 if len > 0 => out[at.min(len - 1)] ^= 1 << rng.below(8),
            1 if len > 0 => out[at.min(len - 1)] = INTERESTING[rng.below(INTERESTING.len())],
            2 => out.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
            3 => drop(out.drain(at..(at + 1 + rng.below(8)).min(len))),
            4 => {
                let end = (at + 1 + rng.below(16)).min(len);
                let chunk = out[at..end].to_vec();
                out.splice(at..at, chunk);
            }
            5 => out.truncate(at),
            _ if !other.is_empty() => {
                let from = rng.below(other.len());
                let end = (from + 1 + rng.below(32)).min(other.len());
                out.splice(at..at, other[from..end].iter().copied());
            }
            _ => {}
        }
    }
    out
}

/// Runs the corpus of target `name`, then [`MUTATIONS`] mutations of it, through `entry` on a worker
/// thread; the calling thread watches for an input that does not return. Panics (fails the test) on an
/// input that panicked or hung.
pub fn replay(name: &str, entry: Entry) {
    let seeds = corpus(name);
    assert!(!seeds.is_empty(), "the corpus of {name} is empty");
    // A fixed seed per target, so adding a target does not change the others' inputs.
    let mut rng =
        Rng(name.bytes().fold(0x9E37_79B9_7F4A_7C15, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01B3)));
    let mut inputs = seeds.clone();
    for _ in 0..MUTATIONS {
        let seed = &seeds[rng.below(seeds.len())];
        let other = &seeds[rng.below(seeds.len())];
        inputs.push(mutate(&mut rng, seed, other));
    }
    // The input the worker is on and when it began it.
    let current = Arc::new(Mutex::new((Vec::new(), Instant::now())));
    let (done, finished) = mpsc::channel();
    let watched = current.clone();
    let started = Instant::now();
    std::thread::spawn(move || {
        let mut panics = Vec::new();
        for input in inputs {
            *watched.lock().unwrap() = (input.clone(), Instant::now());
            if catch_unwind(AssertUnwindSafe(|| entry(&input))).is_err() {
                panics.push(input);
            }
        }
        let _ = done.send(panics);
    });
    let panics = loop {
        match finished.recv_timeout(Duration::from_millis(200)) {
            Ok(panics) => break panics,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let (input, since) = &*current.lock().unwrap();
                assert!(
                    since.elapsed() < HANG,
                    "{name}: an input has run for over {HANG:?}: {:?}",
                    String::from_utf8_lossy(input)
                );
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{name}: the replay thread died"),
        }
    };
    let shown: Vec<String> =
        panics.iter().take(5).map(|p| format!("{:?}", String::from_utf8_lossy(p))).collect();
    assert!(
        panics.is_empty(),
        "{name}: {} of {} inputs panicked, e.g. {}",
        panics.len(),
        seeds.len() + MUTATIONS,
        shown.join("\n")
    );
    eprintln!("{name}: {} inputs in {:.1} s", seeds.len() + MUTATIONS, started.elapsed().as_secs_f64());
}
