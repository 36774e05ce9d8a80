//! The context cache: latent rows of finished requests, kept in units of [`UNIT_TOKENS`] tokens.
//!
//! A unit's key hashes the previous unit's key and its own token ids (the first unit hashes the model's
//! identity instead), so a key stands for the whole prefix up to the unit's end and a lookup walks the
//! prompt's units from token 0 until one is missing. Units live in host memory up to `--cache-memory`
//! bytes, least recently used evicted first; with `--cache-dir` an evicted unit goes to disk
//! ([`DiskStore`]) and is read back on a hit.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::disk_store::DiskStore;

/// Tokens per unit: DeepSeek's context cache stores prefixes in units of 64 tokens.
pub const UNIT_TOKENS: usize = 64;

pub type Key = [u8; 32];

/// One unit's latent rows, one byte vector per layer (as `KvCache::export_rows` gives them).
#[derive(Debug, PartialEq, Eq)]
pub struct Unit {
    pub layers: Vec<Vec<u8>>,
}

impl Unit {
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(Vec::len).sum()
    }
}

/// The keys of the whole units of `tokens`, in order, for the model `identity`.
pub fn unit_keys(identity: &Key, tokens: &[u32]) -> Vec<Key> {
    let mut previous = *identity;
    tokens
        .chunks_exact(UNIT_TOKENS)
        .map(|unit| {
            let mut h = Sha256::new();
            h.update(previous);
            unit.iter().for_each(|t| h.update(t.to_le_bytes()));
            previous = h.finalize().into();
            previous
        })
        .collect()
}

struct Entry {
    unit: Arc<Unit>,
    last_use: u64,
    on_disk: bool,
}

pub struct PrefixCache {
    budget: usize,
    used: usize,
    /// Increases at every use; a unit's last use orders eviction.
    clock: u64,
    /// Each unit with its last use and whether `disk` holds it already (read from there, or written).
    units: HashMap<Key, Entry>,
    by_age: BTreeMap<u64, Key>,
    disk: Option<DiskStore>,
}

impl PrefixCache {
    /// A cache of at most `budget` bytes in memory, spilling to `disk` when given.
    pub fn new(budget: usize, disk: Option<DiskStore>) -> PrefixCache {
        PrefixCache { budget, used: 0, clock: 0, units: HashMap::new(), by_age: BTreeMap::new(), disk }
    }

    /// Bytes of units in memory.
    pub fn memory_bytes(&self) -> usize {
        self.used
    }

    /// The stored units of the longest prefix of `keys` (from the first), from memory or disk.
    pub fn lookup(&mut self, keys: &[Key]) -> Vec<Arc<Unit>> {
        let mut found = Vec::new();
        for key in keys {
            let unit = match self.touch(key) {
                Some(unit) => unit,
                None => match self.disk.as_ref().and_then(|d| d.read(key)) {
                    Some(unit) => self.add(*key, unit, true),
                    None => break,
                },
            };
            found.push(unit);
        }
        found
    }

    /// Whether `key` is in memory; marks it used if so.
    pub fn refresh(&mut self, key: &Key) -> bool {
        self.touch(key).is_some()
    }

    /// Stores a unit (most recently used), evicting the least recently used units beyond the budget.
    /// A unit just computed is written to disk when it leaves memory, replacing any file of that key
    /// (which, had it been sound, would have been found instead of computing the unit).
    pub fn insert(&mut self, key: Key, unit: Unit) -> Arc<Unit> {
        self.add(key, unit, false)
    }

    fn add(&mut self, key: Key, unit: Unit, on_disk: bool) -> Arc<Unit> {
        let unit = Arc::new(unit);
        if let Some(old) = self.units.remove(&key) {
            self.by_age.remove(&old.last_use);
            self.used -= old.unit.bytes();
        }
        self.clock += 1;
        self.used += unit.bytes();
        self.units.insert(key, Entry { unit: unit.clone(), last_use: self.clock, on_disk });
        self.by_age.insert(self.clock, key);
        while self.used > self.budget {
            let Some((_, oldest)) = self.by_age.pop_first() else { break };
            if let Some(evicted) = self.units.remove(&oldest) {
                self.used -= evicted.unit.bytes();
                self.spill(&oldest, &evicted);
            }
        }
        unit
    }

    /// Writes every unit in memory to disk (at shutdown, so that a restart finds them).
    pub fn flush(&self) {
        for (key, entry) in &self.units {
            self.spill(key, entry);
        }
    }

    fn touch(&mut self, key: &Key) -> Option<Arc<Unit>> {
        let entry = self.units.get_mut(key)?;
        self.by_age.remove(&entry.last_use);
        self.clock += 1;
        entry.last_use = self.clock;
        self.by_age.insert(self.clock, *key);
        Some(entry.unit.clone())
    }

    /// A unit to disk, unless there is no disk or it is there already; a failed write is only reported
    /// (the unit is then a miss later, which is correct).
    fn spill(&self, key: &Key, entry: &Entry) {
        let Some(disk) = &self.disk else { return };
        if !entry.on_disk {
            if let Err(e) = disk.write(key, &entry.unit) {
                tracing::warn!("dsv3 serve: writing cache unit {} failed: {e}", disk.path(key).display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(byte: u8) -> Unit {
        Unit { layers: vec![vec![byte; 8]] }
    }

    #[test]
    fn keys_chain_over_whole_units_only() {
        let tokens: Vec<u32> = (0..200).collect();
        let keys = unit_keys(&[0; 32], &tokens);
        assert_eq!(keys.len(), 3);
        assert_eq!(unit_keys(&[0; 32], &tokens[..128]), keys[..2]);
        // The same second unit after a different first unit has another key; so has another model.
        let mut other = tokens.clone();
        other[0] = 999;
        assert_ne!(unit_keys(&[0; 32], &other)[1], keys[1]);
        assert_ne!(unit_keys(&[1; 32], &tokens)[0], keys[0]);
    }

    #[test]
    fn lookup_stops_at_the_first_missing_unit_and_lru_evicts_to_disk() {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskStore::open(dir.path(), [0; 32], 1, 8).unwrap();
        let mut cache = PrefixCache::new(16, Some(disk));
        let keys: Vec<Key> = (0..3).map(|i| [i; 32]).collect();
        cache.insert(keys[0], unit(0));
        cache.insert(keys[2], unit(2));
        assert_eq!(cache.lookup(&keys).len(), 1, "unit 1 is missing");
        // Unit 0 was just used, so inserting unit 1 evicts unit 2 (to disk), and a lookup reads it back.
        cache.insert(keys[1], unit(1));
        assert_eq!(cache.memory_bytes(), 16);
        assert!(!cache.refresh(&keys[2]));
        let found = cache.lookup(&keys);
        assert_eq!(found.iter().map(|u| u.layers[0][0]).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(cache.memory_bytes(), 16);

        let mut memory_only = PrefixCache::new(8, None);
        memory_only.insert(keys[0], unit(0));
        memory_only.insert(keys[1], unit(1));
        assert!(memory_only.lookup(&keys).is_empty());
    }
}
