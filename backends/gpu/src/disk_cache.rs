//! Compiled kernels on disk, so a process compiles each variant once per machine and compiler: files are
//! named by the target architecture and a hash of everything that decides the binary (the assembled
//! source, the compiler and its version, the options). Writes go to a temporary file renamed into place,
//! so concurrent processes never read a partial binary; each entry ends with a hash of its bytes, so an
//! entry damaged later (a full disk, a crash) is found, deleted and compiled again instead of failing
//! every run.
//!
//! The cache is an optimisation: when its directory cannot be written (`HOME=/proc`, a read-only
//! `XDG_CACHE_HOME`) kernels go to a private directory under the system's temporary directory, and the
//! process says so once on stderr.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// An environment variable naming a directory, if it is set to an absolute path (an empty or relative
/// `HOME` would otherwise put `.cache` into the working directory; the XDG spec ignores relative values).
fn absolute_var(name: &str) -> Option<PathBuf> {
    std::env::var_os(name).map(PathBuf::from).filter(|p| p.is_absolute())
}

/// `$DSV3_KERNEL_CACHE` (as given), else `$XDG_CACHE_HOME/dsv3/kernels`, else `~/.cache/dsv3/kernels`,
/// else [`fallback_dir`].
fn configured_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DSV3_KERNEL_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = absolute_var("XDG_CACHE_HOME") {
        return d.join("dsv3").join("kernels");
    }
    if let Some(h) = absolute_var("HOME") {
        return h.join(".cache").join("dsv3").join("kernels");
    }
    fallback_dir()
}

/// `dsv3-kernels-<uid>` under the temporary directory, created private: the emulator loads the shared
/// libraries it finds there, so a directory another user could write to is never used.
fn fallback_dir() -> PathBuf {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("dsv3-kernels-{uid}"))
}

/// Whether `dir` exists (created if needed, private when it is ours to create) and takes new files.
fn usable(dir: &Path, private: bool) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    if private {
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| e.to_string())?;
    if private {
        let meta = std::fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
        // SAFETY: as in fallback_dir.
        if !meta.is_dir() || meta.uid() != unsafe { libc::getuid() } || meta.mode() & 0o022 != 0 {
            return Err("not a directory of this user's that only it can write".into());
        }
    }
    let probe = dir.join(format!(".probe-{}-{}", std::process::id(), unique()));
    std::fs::write(&probe, b"").map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// The cache directory: the configured one if it can be written, else [`fallback_dir`] (said once, as a
/// `tracing` warning: the program decides where it goes). Decided once per process.
pub fn dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let configured = configured_dir();
        let fallback = fallback_dir();
        let private = configured == fallback;
        match usable(&configured, private) {
            Ok(()) => configured,
            Err(why) if !private => {
                tracing::warn!(
                    "kernel cache {} is not usable ({why}); using {}",
                    configured.display(),
                    fallback.display()
                );
                if let Err(why) = usable(&fallback, true) {
                    tracing::warn!("kernel cache {} is not usable either ({why})", fallback.display());
                }
                fallback
            }
            Err(why) => {
                tracing::warn!("kernel cache {} is not usable ({why})", configured.display());
                configured
            }
        }
    })
    .clone()
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

/// The entry at `path` without its check hash; `None` when absent, and when damaged (then it is deleted,
/// so that the compilation that follows replaces it).
pub fn read(path: &Path) -> Option<Vec<u8>> {
    let mut bytes = std::fs::read(path).ok()?;
    let body = bytes.len().checked_sub(CHECK_LEN)?;
    if bytes[body..] != *hash(&[&bytes[..body]]).as_bytes() {
        let _ = std::fs::remove_file(path);
        return None;
    }
    bytes.truncate(body);
    Some(bytes)
}

/// Length of the hash that ends each entry (32 hex digits).
const CHECK_LEN: usize = 32;

/// Stores `bytes` (and their hash) at `path`; failures are ignored (the cache is an optimisation: the
/// kernel was compiled).
pub fn write(path: &Path, bytes: &[u8]) {
    let Some(parent) = path.parent() else { return };
    if std::fs::create_dir_all(parent).is_err() {
        return;
    }
    let tmp = parent.join(format!(".{}.{}.tmp", std::process::id(), unique()));
    let entry = [bytes, hash(&[bytes]).as_bytes()].concat();
    if std::fs::write(&tmp, entry).is_ok() && std::fs::rename(&tmp, path).is_err() {
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

    #[test]
    fn a_damaged_entry_is_deleted_not_reused() {
        let d = std::env::temp_dir().join(format!("dsv3-cache-damaged-{}", std::process::id()));
        let p = d.join("x-2.bin");
        write(&p, b"a compiled kernel");
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[3] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(read(&p), None);
        assert!(!p.exists(), "the damaged entry is removed so the next compilation replaces it");
        std::fs::write(&p, b"short").unwrap(); // shorter than the check hash
        assert_eq!(read(&p), None);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_unusable_directory_is_reported() {
        assert!(usable(Path::new("/proc/dsv3-kernels"), false).is_err());
        let d = std::env::temp_dir().join(format!("dsv3-cache-usable-{}", std::process::id()));
        usable(&d, true).unwrap();
        let _ = std::fs::remove_dir_all(&d);
    }
}
