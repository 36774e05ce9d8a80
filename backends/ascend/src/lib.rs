//! dsv3's Ascend backend — a stub over CANN.
//!
//! CANN is loaded at run time (`dlopen`): `libascendcl.so` (ACL runtime: devices, contexts, memory,
//! streams), `libnnopbase.so` (aclnn tensor descriptors) and the aclnn operator library (`libopapi.so`,
//! or CANN 8's split `libopapi_math.so` / `libopapi_nn.so` / `libopapi_transformer.so`). Nothing from
//! CANN is needed to build; without it `devices()` is `Error::Unavailable` naming every place it looked.
//!
//! What it runs: device discovery, memory, streams, and one operator end to end — `gemm` with dense bf16
//! (or f16) operands through aclnnMatmul's two phases. Every other op is answered
//! `Support::Unsupported` with the aclnn operator that would serve it (see `support.rs`).
//!
//! It has been exercised only against the fake CANN in `tests/fake_cann/`, never on Ascend hardware.

mod buffer;
mod device;
mod ffi;
mod gemm;
mod support;

pub use device::AscendDevice;

use dsv3_core::{Backend, Device, DeviceInfo, Error, Result};
use ffi::{Cann, BACKEND};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// Names a directory of CANN's libraries explicitly, before any other place (the tests point it at the
/// fake library).
pub const LIB_DIR_ENV: &str = "DSV3_ASCEND_LIB_DIR";

/// Where a default CANN toolkit install keeps its libraries.
pub const DEFAULT_LIB_DIR: &str = "/usr/local/Ascend/ascend-toolkit/latest/lib64";

/// One place to look for CANN: where the path came from, and the path (`None`: the variable is unset).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchDir {
    pub origin: String,
    pub path: Option<PathBuf>,
}

/// The places to look, in order, given a way to read environment variables: `DSV3_ASCEND_LIB_DIR`,
/// `$ASCEND_HOME_PATH/lib64` and `$ASCEND_TOOLKIT_HOME/lib64` (both set by CANN's `set_env.sh`), then the
/// default install. An empty variable counts as unset.
pub fn search_dirs(env: impl Fn(&str) -> Option<String>) -> Vec<SearchDir> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    vec![
        SearchDir { origin: LIB_DIR_ENV.into(), path: var(LIB_DIR_ENV) },
        SearchDir {
            origin: "$ASCEND_HOME_PATH/lib64".into(),
            path: var("ASCEND_HOME_PATH").map(|p| p.join("lib64")),
        },
        SearchDir {
            origin: "$ASCEND_TOOLKIT_HOME/lib64".into(),
            path: var("ASCEND_TOOLKIT_HOME").map(|p| p.join("lib64")),
        },
        SearchDir { origin: "default install".into(), path: Some(PathBuf::from(DEFAULT_LIB_DIR)) },
    ]
}

/// Loads CANN from the first place that has `libascendcl.so`. The libraries are taken together from that
/// one directory (never mixed across installs); if they are incomplete or fail to load there, that is the
/// answer, not a reason to look further.
fn find_and_load(dirs: &[SearchDir]) -> std::result::Result<Arc<Cann>, String> {
    let mut looked = Vec::new();
    for dir in dirs {
        let Some(path) = &dir.path else {
            looked.push(format!("{} (not set)", dir.origin));
            continue;
        };
        if !path.join("libascendcl.so").is_file() {
            looked.push(format!("{} = {} (no libascendcl.so)", dir.origin, path.display()));
            continue;
        }
        return Cann::load(path).map(Arc::new).map_err(|e| {
            format!(
                "CANN found in {} ({}) but not usable: {e}. If a library failed to load, `source \
                 <toolkit>/set_env.sh` so that LD_LIBRARY_PATH holds CANN's library directories",
                path.display(),
                dir.origin
            )
        });
    }
    Err(format!(
        "CANN not found: no libascendcl.so in {}. Install the CANN toolkit and `source \
         <toolkit>/set_env.sh`, or set {LIB_DIR_ENV}",
        looked.join("; ")
    ))
}

pub struct AscendBackend {
    dirs: Vec<SearchDir>,
    /// Loaded on first use and kept: CANN is initialised once per process.
    cann: OnceLock<std::result::Result<Arc<Cann>, String>>,
}

impl AscendBackend {
    /// Looks for CANN where a real install puts it (see [`search_dirs`]), reading the environment now.
    pub fn new() -> AscendBackend {
        AscendBackend::with_search_dirs(search_dirs(|name| std::env::var(name).ok()))
    }

    /// Looks only in `dirs`, in order.
    pub fn with_search_dirs(dirs: Vec<SearchDir>) -> AscendBackend {
        AscendBackend { dirs, cann: OnceLock::new() }
    }

    fn cann(&self) -> Result<Arc<Cann>> {
        match self.cann.get_or_init(|| find_and_load(&self.dirs)) {
            Ok(cann) => Ok(cann.clone()),
            Err(reason) => Err(Error::Unavailable { backend: BACKEND.into(), reason: reason.clone() }),
        }
    }

    /// The number of devices, or why there are none to use.
    fn count(&self, cann: &Cann) -> Result<usize> {
        let count = cann.device_count().map_err(|e| Error::Unavailable {
            backend: BACKEND.into(),
            reason: format!("CANN loaded from {} but {e}", cann.dir.display()),
        })?;
        if count == 0 {
            return Err(Error::Unavailable {
                backend: BACKEND.into(),
                reason: format!(
                    "no Ascend device: aclrtGetDeviceCount found none (CANN from {})",
                    cann.dir.display()
                ),
            });
        }
        Ok(count as usize)
    }
}

impl Default for AscendBackend {
    fn default() -> AscendBackend {
        AscendBackend::new()
    }
}

impl Backend for AscendBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn devices(&self) -> Result<Vec<DeviceInfo>> {
        let cann = self.cann()?;
        let count = self.count(&cann)?;
        // Each device is opened briefly for its name and memory, then released.
        (0..count).map(|ordinal| Ok(AscendDevice::open(&cann, ordinal)?.info().clone())).collect()
    }

    fn open(&self, ordinal: usize) -> Result<Arc<dyn Device>> {
        let cann = self.cann()?;
        let count = self.count(&cann)?;
        if ordinal >= count {
            return Err(Error::Unavailable {
                backend: BACKEND.into(),
                reason: format!("there are {count} Ascend device(s), no ordinal {ordinal}"),
            });
        }
        Ok(AscendDevice::open(&cann, ordinal)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsv3_core::Backend;

    #[test]
    fn search_order_and_unset_variables() {
        let env = |name: &str| match name {
            "ASCEND_HOME_PATH" => Some("/opt/cann".to_string()),
            "ASCEND_TOOLKIT_HOME" => Some(String::new()),
            _ => None,
        };
        let dirs = search_dirs(env);
        let paths: Vec<Option<String>> =
            dirs.iter().map(|d| d.path.as_ref().map(|p| p.display().to_string())).collect();
        assert_eq!(
            paths,
            [None, Some("/opt/cann/lib64".into()), None, Some(DEFAULT_LIB_DIR.into())],
            "{dirs:?}"
        );
        assert_eq!(dirs[0].origin, LIB_DIR_ENV);
    }

    #[test]
    fn absent_cann_is_unavailable_and_names_every_place() {
        let empty = std::env::temp_dir().join(format!("dsv3-ascend-empty-{}", std::process::id()));
        std::fs::create_dir_all(&empty).unwrap();
        let backend = AscendBackend::with_search_dirs(vec![
            SearchDir { origin: LIB_DIR_ENV.into(), path: None },
            SearchDir { origin: "here".into(), path: Some(empty.clone()) },
            SearchDir { origin: "nowhere".into(), path: Some(PathBuf::from("/nonexistent/dsv3/lib64")) },
        ]);
        let err = backend.devices().unwrap_err();
        let Error::Unavailable { reason, .. } = &err else { panic!("expected Unavailable, got {err}") };
        assert!(reason.contains(&format!("{LIB_DIR_ENV} (not set)")), "{reason}");
        assert!(reason.contains(&empty.display().to_string()), "{reason}");
        assert!(reason.contains("/nonexistent/dsv3/lib64"), "{reason}");
        assert!(matches!(backend.open(0), Err(Error::Unavailable { .. })));
        std::fs::remove_dir_all(&empty).unwrap();
    }
}
