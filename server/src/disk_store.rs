//! Prefix-cache units on disk (`--cache-dir`): one file per unit, named by its key.
//!
//! Crash safety: a unit is written to a temporary file, synced, then renamed into place, so a unit file
//! is either absent or complete. A file that is nonetheless wrong (truncated, bytes flipped, another
//! model's, another shape) is a miss: every read checks the length, the header (magic, version, key,
//! model identity, shape) and a SHA-256 over all of it, and deletes a file that fails. A miss costs a
//! prefill; it never gives wrong output.
//!
//! Layout, little-endian: `DSV3UNIT` · version u32 · key [32] · model identity [32] · layers u32 ·
//! bytes per layer u64 · the layers' rows · SHA-256 of everything before it [32].

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::prefix_cache::{Key, Unit};

const MAGIC: &[u8; 8] = b"DSV3UNIT";
const VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 32 + 32 + 4 + 8;
const CHECKSUM: usize = 32;
const SUFFIX: &str = "unit";

pub struct DiskStore {
    dir: PathBuf,
    identity: Key,
    layers: usize,
    layer_bytes: usize,
}

impl DiskStore {
    /// The store in `dir` (created if missing) for units of `layers` × `layer_bytes` bytes of the model
    /// `identity`. Temporary files a crash left behind are removed.
    pub fn open(dir: &Path, identity: Key, layers: usize, layer_bytes: usize) -> std::io::Result<DiskStore> {
        fs::create_dir_all(dir)?;
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                fs::remove_file(&path)?;
            }
        }
        Ok(DiskStore { dir: dir.to_path_buf(), identity, layers, layer_bytes })
    }

    /// Where the unit `key` lives.
    pub fn path(&self, key: &Key) -> PathBuf {
        self.dir.join(format!("{}.{SUFFIX}", hex(key)))
    }

    /// Writes the unit `key` (temporary file, sync, rename: see the module docs).
    pub fn write(&self, key: &Key, unit: &Unit) -> std::io::Result<()> {
        let shape_ok =
            unit.layers.len() == self.layers && unit.layers.iter().all(|l| l.len() == self.layer_bytes);
        if !shape_ok {
            let why =
                format!("a unit of another shape than {} layers of {} bytes", self.layers, self.layer_bytes);
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, why));
        }
        let mut bytes = self.header(key);
        unit.layers.iter().for_each(|layer| bytes.extend_from_slice(layer));
        let sum = Sha256::digest(&bytes);
        bytes.extend_from_slice(&sum);
        let path = self.path(key);
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, &path)
    }

    /// The unit `key`, or `None` when it is absent or fails any check (and is then deleted).
    pub fn read(&self, key: &Key) -> Option<Unit> {
        let path = self.path(key);
        let bytes = fs::read(&path).ok()?;
        let unit = self.decode(key, &bytes);
        if unit.is_none() {
            // Best effort: a file that cannot be removed stays a miss at every read.
            let _ = fs::remove_file(&path);
        }
        unit
    }

    fn decode(&self, key: &Key, bytes: &[u8]) -> Option<Unit> {
        let payload = self.layers * self.layer_bytes;
        if bytes.len() != HEADER + payload + CHECKSUM {
            return None;
        }
        let (body, sum) = bytes.split_at(HEADER + payload);
        if body[..HEADER] != self.header(key)[..] || Sha256::digest(body)[..] != sum[..] {
            return None;
        }
        let layers = body[HEADER..].chunks_exact(self.layer_bytes.max(1)).map(<[u8]>::to_vec).collect();
        Some(Unit { layers })
    }
}

impl DiskStore {
    /// The header every unit `key` of this store has.
    fn header(&self, key: &Key) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(HEADER + self.layers * self.layer_bytes + CHECKSUM);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(&self.identity);
        bytes.extend_from_slice(&(self.layers as u32).to_le_bytes());
        bytes.extend_from_slice(&(self.layer_bytes as u64).to_le_bytes());
        bytes
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit() -> Unit {
        Unit { layers: vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8]] }
    }

    #[test]
    fn a_written_unit_reads_back_and_any_damage_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path(), [7; 32], 2, 4).unwrap();
        let key = [1; 32];
        assert!(store.read(&key).is_none());
        store.write(&key, &unit()).unwrap();
        assert_eq!(store.read(&key).unwrap().layers, unit().layers);

        let good = fs::read(store.path(&key)).unwrap();
        for damage in 0..3 {
            let mut bytes = good.clone();
            match damage {
                0 => bytes.truncate(bytes.len() - 1),
                1 => bytes[HEADER + 2] ^= 0x10,
                _ => bytes[HEADER - 1] ^= 1,
            }
            fs::write(store.path(&key), &bytes).unwrap();
            assert!(store.read(&key).is_none(), "damage {damage}");
            assert!(!store.path(&key).exists(), "a bad unit is deleted");
        }
        // Another model's unit under the same key, or a unit filed under another key, is a miss.
        store.write(&key, &unit()).unwrap();
        let other_model = DiskStore::open(dir.path(), [8; 32], 2, 4).unwrap();
        assert!(other_model.read(&key).is_none());
        store.write(&key, &unit()).unwrap();
        fs::rename(store.path(&key), store.path(&[2; 32])).unwrap();
        assert!(store.read(&[2; 32]).is_none());
    }

    #[test]
    fn leftover_temporary_files_are_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let leftover = dir.path().join("ab.123.tmp");
        fs::write(&leftover, b"half").unwrap();
        DiskStore::open(dir.path(), [0; 32], 1, 1).unwrap();
        assert!(!leftover.exists());
    }
}
