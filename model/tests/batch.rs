//! A batch of sequences of different lengths decodes exactly as each sequence does alone, and greedy
//! generation through the public API reproduces the reference's greedy continuation.

use std::path::PathBuf;

use dsv3_backend_cpu::{CpuBackend, Mode};
use dsv3_core::Backend;
use dsv3_model::checkpoint::Checkpoint;
use dsv3_model::config::ModelConfig;
use dsv3_model::generate::{generate, Request, Sampling};
use dsv3_model::graph::{Model, NumericPath};

fn load(path: NumericPath) -> Model {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-dsv3");
    let cfg = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let checkpoint = Checkpoint::open(&dir).unwrap();
    Model::load(cfg, &checkpoint, CpuBackend::new(Mode::Fast).open(0).unwrap(), path, |_| {}).unwrap()
}

fn request(max_new_tokens: usize, temperature: f32) -> Request {
    Request { max_new_tokens, sampling: Sampling { temperature, top_p: 0.9, seed: 7 }, stop: Vec::new() }
}

#[test]
fn batched_equals_alone() {
    let model = load(NumericPath::F32);
    let prompts = vec![vec![5, 17, 300, 2, 9], vec![44, 3, 3, 500, 120, 7, 8, 260, 11], vec![1]];
    for temperature in [0.0, 0.8] {
        let together = generate(&model, &prompts, &request(6, temperature), |_, _| Ok(())).unwrap();
        // Sampling draws uniforms keyed by (seed, step, row): the first sequence is row 0 alone and in the
        // batch, so it must sample the same tokens; greedy must agree for every sequence.
        let compared = if temperature == 0.0 { prompts.len() } else { 1 };
        for (b, prompt) in prompts.iter().enumerate().take(compared) {
            let alone =
                generate(&model, std::slice::from_ref(prompt), &request(6, temperature), |_, _| Ok(()))
                    .unwrap();
            assert_eq!(together.tokens[b], alone.tokens[0], "sequence {b} at temperature {temperature}");
        }
    }
}

#[test]
fn greedy_generation_matches_reference() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-dsv3");
    let golden = std::fs::read(dir.join("golden.safetensors")).unwrap();
    let golden = safetensors::SafeTensors::deserialize(&golden).unwrap();
    let ids = |name: &str| -> Vec<u32> {
        let t = golden.tensor(name).unwrap();
        t.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32).collect()
    };
    let (prompt, expected) = (ids("prompt_ids"), ids("greedy_ids"));
    let model = load(NumericPath::F32);
    let mut streamed = Vec::new();
    let out = generate(&model, &[prompt], &request(expected.len(), 0.0), |_, t| {
        streamed.push(t);
        Ok(())
    })
    .unwrap();
    assert_eq!(out.tokens[0], expected);
    assert_eq!(streamed, expected);
}

#[test]
fn bad_requests_are_errors() {
    let model = load(NumericPath::F32);
    let vocab = model.config.vocab_size as u32;
    let err = generate(&model, &[vec![3, vocab]], &request(2, 0.0), |_, _| Ok(())).unwrap_err();
    assert!(err.to_string().contains("vocab_size"), "{err}");
    let too_long = vec![3; model.config.max_position_embeddings + 1];
    let err = generate(&model, &[too_long], &request(2, 0.0), |_, _| Ok(())).unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");
    let err = generate(&model, &[vec![3]], &request(0, 0.0), |_, _| Ok(())).unwrap_err();
    assert!(err.to_string().contains("max_new_tokens"), "{err}");
}

#[test]
fn a_prefix_exported_and_appended_continues_as_a_cold_run() {
    use dsv3_model::cache::KvCache;
    use dsv3_model::generate::generate_cached;
    let model = load(NumericPath::F32);
    let prompt: Vec<u32> = (0..20).map(|i| (i * 37 + 5) % 500).collect();
    let cold = generate(&model, std::slice::from_ref(&prompt), &request(5, 0.0), |_, _| Ok(())).unwrap();

    let mut first = KvCache::new(&model, 1, 32).unwrap();
    generate_cached(&model, &mut first, std::slice::from_ref(&prompt), &request(2, 0.0), |_, _| Ok(true))
        .unwrap();
    let rows = first.export_rows(&model, 0, 0..12).unwrap();
    assert_eq!(rows.len(), model.config.num_hidden_layers);
    assert_eq!(rows[0].len(), 12 * first.bytes_per_token() / rows.len());

    let mut warm = KvCache::new(&model, 1, 32).unwrap();
    warm.append_rows(&model, 0, &rows).unwrap();
    assert_eq!(warm.lens(), &[12]);
    let rest = vec![prompt[12..].to_vec()];
    let out = generate_cached(&model, &mut warm, &rest, &request(5, 0.0), |_, _| Ok(true)).unwrap();
    assert_eq!(out.tokens[0], cold.tokens[0]);
    // Every token fed through the model stays cached: the prompt and all new tokens but the last.
    assert_eq!(warm.lens(), &[prompt.len() + 4]);

    // Rows that are not whole, a layer missing, or more than the capacity are refused.
    let mut other = KvCache::new(&model, 1, 16).unwrap();
    let mut ragged = rows.clone();
    ragged[0].pop();
    assert!(other.append_rows(&model, 0, &ragged).is_err());
    assert!(other.append_rows(&model, 0, &rows[1..]).is_err());
    other.append_rows(&model, 0, &rows).unwrap();
    assert!(other.append_rows(&model, 0, &rows).unwrap_err().to_string().contains("append_rows"));
    assert!(other.export_rows(&model, 0, 10..13).is_err());
    // A sequence that stops itself (the callback says so) ends after that token.
    let mut fresh = KvCache::new(&model, 1, 32).unwrap();
    let stopped =
        generate_cached(&model, &mut fresh, std::slice::from_ref(&prompt), &request(5, 0.0), |_, _| {
            Ok(false)
        })
        .unwrap();
    assert_eq!(stopped.tokens[0].len(), 1);
}

#[test]
fn a_sequence_moved_to_another_slot_decodes_as_it_would_have() {
    use dsv3_model::cache::KvCache;
    use dsv3_model::generate::sample_rows;
    use dsv3_model::graph::Logits;
    let model = load(NumericPath::F32);
    let prompt: Vec<u32> = (0..9).map(|i| (i * 37 + 5) % 500).collect();
    let greedy = request(4, 0.0).sampling;
    let alone = generate(&model, std::slice::from_ref(&prompt), &request(4, 0.0), |_, _| Ok(())).unwrap();

    // Prefilled in slot 2 of three, moved to slot 0, decoded there as a batch of one.
    let mut cache = KvCache::new(&model, 3, 32).unwrap();
    let logits = model.forward(&mut cache.slot(2).unwrap(), &prompt, prompt.len(), Logits::Last).unwrap();
    let mut tokens = sample_rows(&model, &logits, &[(greedy, 0)]).unwrap();
    cache.move_slot(2, 0).unwrap();
    assert_eq!(cache.lens(), &[9, 0, 0]);
    for step in 1..4 {
        let mut view = cache.slots(0..1).unwrap();
        let logits = model.forward(&mut view, &tokens[step - 1..step], 1, Logits::Last).unwrap();
        tokens.extend(sample_rows(&model, &logits, &[(greedy, step)]).unwrap());
    }
    assert_eq!(tokens, alone.tokens[0]);
    cache.clear(0);
    assert_eq!(cache.lens(), &[0, 0, 0]);
    assert!(cache.slots(1..4).is_err() && cache.slots(1..1).is_err());
    assert!(cache.move_slot(3, 0).unwrap_err().to_string().contains("move_slot"));
}

/// Two sequences with a common 70-token prefix (a whole page and 6 positions of the next) share its pages;
/// the first token either appends copies the partly filled shared page (copy-on-write), and each goes on
/// exactly as it would alone, through decode steps as a batch of two.
#[test]
fn sequences_sharing_a_prefix_decode_as_they_would_alone() {
    use dsv3_model::cache::{KvCache, PAGE};
    use dsv3_model::generate::sample_rows;
    use dsv3_model::graph::Logits;
    let model = load(NumericPath::F32);
    let greedy = request(4, 0.0).sampling;
    let prefix: Vec<u32> = (0..70).map(|i| (i * 53 + 11) % 500).collect();
    let (tail_a, tail_b) = (vec![7u32, 8, 9], vec![400u32, 3]);
    let whole = |tail: &[u32]| [&prefix[..], tail].concat();
    let alone = |tail: &[u32]| {
        generate(&model, &[whole(tail)], &request(4, 0.0), |_, _| Ok(())).unwrap().tokens[0].clone()
    };

    let mut cache = KvCache::new(&model, 2, 128).unwrap();
    model.forward(&mut cache.slot(0).unwrap(), &prefix, prefix.len(), Logits::Last).unwrap();
    cache.share_prefix(0, 1, prefix.len()).unwrap();
    assert_eq!(cache.lens(), &[70, 70]);
    assert_eq!(cache.pages_in_use().0, 70usize.div_ceil(PAGE), "the prefix's pages, once");
    let mut next = Vec::new();
    for (b, tail) in [&tail_a, &tail_b].into_iter().enumerate() {
        let logits = model.forward(&mut cache.slot(b).unwrap(), tail, tail.len(), Logits::Last).unwrap();
        next.extend(sample_rows(&model, &logits, &[(greedy, 0)]).unwrap());
    }
    // The whole first page stays shared; each sequence has its own copy of the second.
    assert_eq!(cache.pages_in_use().0, 3);
    let mut tokens = vec![vec![next[0]], vec![next[1]]];
    for step in 1..4 {
        let logits = model.forward(&mut cache, &next, 1, Logits::Last).unwrap();
        next = sample_rows(&model, &logits, &[(greedy, step), (greedy, step)]).unwrap();
        tokens.iter_mut().zip(&next).for_each(|(t, &n)| t.push(n));
    }
    assert_eq!(tokens, [alone(&tail_a), alone(&tail_b)]);
    cache.clear(0);
    cache.clear(1);
    assert_eq!(cache.pages_in_use().0, 0, "every page back in the pool");
    assert!(cache.share_prefix(0, 0, 1).is_err(), "a slot cannot share with itself");
}

/// Rows of one batch with different sampling settings are drawn in one sample launch, each exactly as a
/// batch of that row alone draws it: what lets a server batch requests with their own parameters.
#[test]
fn rows_with_their_own_sampling_draw_in_one_launch_as_they_would_alone() {
    use dsv3_model::cache::KvCache;
    use dsv3_model::generate::sample_rows;
    use dsv3_model::graph::Logits;
    let model = load(NumericPath::F32);
    let prompts: Vec<u32> = (0..4 * 5).map(|i| (i * 53 + 11) % 500).collect();
    let cache = KvCache::new(&model, 4, 16).unwrap();
    let mut view = cache.slots(0..4).unwrap();
    let logits = model.forward(&mut view, &prompts, 5, Logits::Last).unwrap();
    let at = |temperature, top_p, seed| Sampling { temperature, top_p, seed };
    // A greedy row, two rows with one seed and step but other settings, a narrow nucleus.
    let rows = [(at(0.8, 0.9, 7), 3), (at(0.0, 1.0, 7), 0), (at(1.3, 0.5, 11), 0), (at(0.6, 1.0, 7), 3)];
    let launches = model.launches();
    let together = sample_rows(&model, &logits, &rows).unwrap();
    assert_eq!(model.launches() - launches, 1, "one sample launch for the batch");
    for (r, row) in rows.iter().enumerate() {
        let alone = sample_rows(&model, &logits.narrow(0, r, 1).unwrap(), std::slice::from_ref(row)).unwrap();
        assert_eq!(together[r], alone[0], "row {r}: {row:?}");
    }
}

/// A pool smaller than its sequences could fill: what a sequence may still take is counted (pages it will
/// write and does not hold alone), a step that finds too few free pages is an error that changes nothing,
/// and a pool that cannot hold one sequence is refused.
#[test]
fn a_small_page_pool_counts_what_sequences_may_take() {
    use dsv3_model::cache::KvCache;
    use dsv3_model::graph::Logits;
    let model = load(NumericPath::F32);
    let too_small = KvCache::with_pool(&model, 2, 128, 1).err().expect("one page cannot hold 128 tokens");
    assert!(too_small.to_string().contains("pages"), "{too_small}");
    // Two sequences of up to 128 tokens (2 pages each) over 3 pages.
    let mut cache = KvCache::with_pool(&model, 2, 128, 3).unwrap();
    let prompt: Vec<u32> = (0..100).map(|i| (i * 37 + 5) % 500).collect();
    assert_eq!(cache.pages_to_grow(0, 100).unwrap(), 2);
    model.forward(&mut cache.slot(0).unwrap(), &prompt, 100, Logits::Last).unwrap();
    assert_eq!((cache.free_pages(), cache.pages_to_grow(0, 128).unwrap()), (1, 0));
    let err = model.forward(&mut cache.slot(1).unwrap(), &prompt, 100, Logits::Last).unwrap_err();
    assert!(err.to_string().contains("pages"), "{err}");
    assert_eq!((cache.lens(), cache.free_pages()), (vec![100, 0], 1), "the failed step changed nothing");
    // Sharing the first whole page: sequence 1 takes one page to reach 100 tokens; sequence 0 never writes
    // the shared page again, so it still needs none.
    cache.share_prefix(0, 1, 64).unwrap();
    assert_eq!((cache.pages_to_grow(1, 100).unwrap(), cache.pages_to_grow(0, 128).unwrap()), (1, 0));
    model.forward(&mut cache.slot(1).unwrap(), &prompt[64..], 36, Logits::Last).unwrap();
    assert_eq!((cache.lens(), cache.free_pages()), (vec![100, 100], 0));
    cache.clear(0);
    assert_eq!(cache.free_pages(), 1, "the shared page stays with sequence 1");
}

/// A held page outlives its sequence, and a sequence started on it continues exactly as one that computed
/// the prefix itself; releasing the hold returns the page.
#[test]
fn a_held_page_outlives_its_sequence_and_starts_another() {
    use dsv3_model::cache::KvCache;
    use dsv3_model::generate::sample_rows;
    use dsv3_model::graph::Logits;
    let model = load(NumericPath::F32);
    let prompt: Vec<u32> = (0..70).map(|i| (i * 37 + 5) % 500).collect();
    let greedy = request(1, 0.0).sampling;
    let next = |cache: &KvCache, slot: usize, tokens: &[u32]| {
        let logits =
            model.forward(&mut cache.slot(slot).unwrap(), tokens, tokens.len(), Logits::Last).unwrap();
        sample_rows(&model, &logits, &[(greedy, 0)]).unwrap()[0]
    };
    let mut cache = KvCache::with_pool(&model, 2, 128, 4).unwrap();
    let cold = next(&cache, 0, &prompt);
    assert!(cache.hold(0, 1).is_err(), "70 tokens hold one whole unit");
    let held = cache.hold(0, 0).unwrap();
    cache.clear(0);
    assert_eq!((cache.free_pages(), cache.held_alone(held)), (3, true));
    cache.attach(1, &[held]).unwrap();
    assert_eq!((cache.lens(), cache.held_alone(held)), (vec![0, 64], false));
    assert!(cache.attach(1, &[held]).is_err(), "slot 1 is not empty");
    assert_eq!(next(&cache, 1, &prompt[64..]), cold, "the held rows are the prefix's");
    cache.clear(1);
    cache.release(held);
    assert_eq!(cache.free_pages(), 4);
}
