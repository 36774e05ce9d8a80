//! Compiled kernels on disk, so a process compiles each variant once per machine and compiler: files are
//! named by the target architecture and a hash of everything that decides the binary (the assembled
//! source, the compiler and its version, the options). Writes go to a temporary file renamed into place,
//! so concurrent processes never read a partial binary.

use std::path::{Path, PathBuf};

/// `$DSV3_KERNEL_CACHE`, else `$XDG_CACHE_HOME/dsv3/kernels`, else `~/.cache/dsv3/kernels`, else a
/// directory under the system's temporary directory.
pub fn dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DSV3_KERNEL_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("dsv3").join("kernels");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache").join("dsv3").join("kernels");
    }
    std::env::temp_dir().join("dsv3-kernels")
}

/// 128-bit FNV-1a of the parts (with separators, so ("ab","c") ≠ ("a","bc")), as 32 hex digits.
pub fn hash(parts: &[&[u8]]) -> String {
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    for part in parts {
        for &b in part.iter().chain(&[0xff]) {
            h ^= b as u128;
            h = h.wrapping_mul(PRIME);
        }
    }
    format!("{h:032x}")
}

/// The cache file for a kernel binary: `<dir>/<prefix>-<hash><ext>`.
pub fn path(prefix: &str, hash: &str, ext: &str) -> PathBuf {
    dir().join(format!("{prefix}-{hash}{ext}"))
}

pub fn read(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

/// Stores `bytes` at `path`; failures are ignored (the cache is an optimisation: the kernel was compiled).
pub fn write(path: &Path, bytes: &[u8]) {
    let Some(parent) = path.parent() else { return };
    if std::fs::create_dir_all(parent).is_err() {
        return;
    }
    let tmp = parent.join(format!(".{}.{}.tmp", std::process::id(), unique()));
    if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// A process-unique number for temporary names.
pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_change_with_every_part_and_its_boundaries() {
        let k = hash(&[b"source", b"nvrtc 13.0", b"sm_90a"]);
        assert_eq!(k.len(), 32);
        assert_eq!(k, hash(&[b"source", b"nvrtc 13.0", b"sm_90a"]));
        assert_ne!(k, hash(&[b"source", b"nvrtc 13.0", b"sm_80"]));
        assert_ne!(k, hash(&[b"source", b"nvrtc 13.1", b"sm_90a"]));
        assert_ne!(k, hash(&[b"sourc", b"e", b"nvrtc 13.0", b"sm_90a"]));
    }

    #[test]
    fn entries_round_trip_through_the_directory() {
        let d = std::env::temp_dir().join(format!("dsv3-cache-test-{}", std::process::id()));
        let p = d.join("x-1.bin");
        write(&p, b"cubin");
        assert_eq!(read(&p).as_deref(), Some(&b"cubin"[..]));
        let _ = std::fs::remove_dir_all(&d);
    }
}
