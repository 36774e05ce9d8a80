//! Prefix units kept on the device: when a request ends, the latent cache pages of its whole 64-token
//! units stay in the pool ([`KvCache::hold`]), keyed as the context cache keys its units, so a later
//! request starting with them shares those pages ([`KvCache::attach`]): a hit uploads and recomputes
//! nothing. They take no memory beyond the pool: when admission needs pages, the least recently used units
//! that only this keeps are released first.

use lru::LruCache;

use dsv3_model::cache::{HeldPage, KvCache};

use crate::prefix_cache::Key;

pub struct DeviceUnits {
    units: LruCache<Key, HeldPage>,
}

impl Default for DeviceUnits {
    fn default() -> DeviceUnits {
        DeviceUnits { units: LruCache::unbounded() }
    }
}

impl DeviceUnits {
    /// The held pages of the longest run of `keys` from the first, marked as just used — the first unit
    /// most recently, so that release takes a run's last units before its first (a unit past a released
    /// one can no longer be found).
    pub fn lookup(&mut self, keys: &[Key]) -> Vec<HeldPage> {
        let pages: Vec<HeldPage> = keys.iter().map_while(|key| self.units.peek(key).copied()).collect();
        for key in keys[..pages.len()].iter().rev() {
            self.units.promote(key);
        }
        pages
    }

    /// Holds the units of sequence `slot` whose `keys` (its whole units, in order) are not held yet, and
    /// marks them all as just used, the first most recently (as [`DeviceUnits::lookup`] does).
    pub fn keep(&mut self, kv: &mut KvCache, slot: usize, keys: &[Key]) -> dsv3_core::Result<()> {
        for (unit, key) in keys.iter().enumerate().rev() {
            if !self.units.promote(key) {
                let page = kv.hold(slot, unit)?;
                self.units.put(*key, page);
            }
        }
        Ok(())
    }

    /// Pages that releasing units would return to the pool: those no sequence shares.
    pub fn reclaimable(&self, kv: &KvCache) -> usize {
        self.units.iter().filter(|(_, page)| kv.held_alone(**page)).count()
    }

    /// Releases the least recently used units that no sequence shares until the pool has `free` free pages
    /// (or no such unit is left).
    pub fn reclaim(&mut self, kv: &mut KvCache, free: usize) {
        let wanted = free.saturating_sub(kv.free_pages());
        let victims: Vec<Key> = self
            .units
            .iter()
            .rev()
            .filter(|(_, page)| kv.held_alone(**page))
            .map(|(key, _)| *key)
            .take(wanted)
            .collect();
        for key in victims {
            if let Some(page) = self.units.pop(&key) {
                kv.release(page);
            }
        }
    }
}
