//! The machine's NUMA nodes as Linux's sysfs lists them, restricted to the CPUs this process may run on
//! (its affinity mask): which node each of the pool's workers runs on, for [`crate::placement`].
//!
//! Read from `/sys/devices/system/node/node<N>/cpulist` (the node's CPUs) and
//! `/sys/devices/system/cpu/online` (an offline CPU may stay in its node's list), no C library. Anything
//! that does not parse is a [`TopologyError`] naming the file, never a panic: the caller then places
//! nothing ("topology unknown").

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Highest CPU number accepted (Linux's largest `NR_CPUS` is 8192): bounds the lists a malformed
/// range such as `0-4294967295` would otherwise expand to.
const MAX_CPU: usize = 1 << 16;

/// A node with at least one CPU the process may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The kernel's node number (`node<id>`; numbers may have gaps).
    pub id: usize,
    /// Its online CPUs that the process may run on, ascending.
    pub cpus: Vec<usize>,
}

/// Nodes in ascending id; memory-only nodes and nodes none of whose CPUs the process may use are left
/// out (no worker would read memory placed there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    pub nodes: Vec<Node>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopologyError {
    /// A file or directory that should be there could not be read (no NUMA support, no sysfs).
    Unreadable { path: PathBuf, reason: String },
    /// A file whose text is not what the kernel writes there.
    Malformed { path: PathBuf, text: String, reason: String },
}

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopologyError::Unreadable { path, reason } => write!(f, "{}: {reason}", path.display()),
            TopologyError::Malformed { path, text, reason } => {
                write!(f, "{}: {reason} in {:?}", path.display(), text.trim_end())
            }
        }
    }
}

/// The CPUs of a kernel CPU list (`cpulist` format: `0-3,8-11`, a single `5`, or empty), ascending and
/// without repeats.
pub fn parse_cpulist(text: &str) -> Result<Vec<usize>, String> {
    let text = text.trim();
    let mut cpus = Vec::new();
    if text.is_empty() {
        return Ok(cpus);
    }
    for part in text.split(',') {
        let number = |s: &str| -> Result<usize, String> {
            let v: usize = s.trim().parse().map_err(|_| format!("{s:?} is not a CPU number"))?;
            if v >= MAX_CPU {
                return Err(format!("CPU {v} is beyond {MAX_CPU}"));
            }
            Ok(v)
        };
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (number(lo)?, number(hi)?),
            None => (number(part)?, number(part)?),
        };
        if lo > hi {
            return Err(format!("range {part:?} runs backwards"));
        }
        cpus.extend(lo..=hi);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// `cpus` (ascending) written as a CPU list again (`0-3,8-11`), for reports.
pub fn format_cpulist(cpus: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        parts.push(if j == i { cpus[i].to_string() } else { format!("{}-{}", cpus[i], cpus[j]) });
        i = j + 1;
    }
    parts.join(",")
}

/// [`Topology::read`] of this machine for this process's affinity mask, read once.
pub fn this_process() -> &'static Result<Topology, TopologyError> {
    static TOPOLOGY: OnceLock<Result<Topology, TopologyError>> = OnceLock::new();
    TOPOLOGY.get_or_init(Topology::of_this_process)
}

fn read(path: &Path) -> Result<String, TopologyError> {
    std::fs::read_to_string(path)
        .map_err(|e| TopologyError::Unreadable { path: path.to_path_buf(), reason: e.to_string() })
}

fn read_cpulist(path: &Path) -> Result<Vec<usize>, TopologyError> {
    let text = read(path)?;
    parse_cpulist(&text).map_err(|reason| TopologyError::Malformed { path: path.to_path_buf(), text, reason })
}

impl Topology {
    /// The nodes under `system` (a `/sys/devices/system` tree) whose online CPUs include some of
    /// `allowed` (the process's affinity mask).
    pub fn read(system: &Path, allowed: &[usize]) -> Result<Topology, TopologyError> {
        let online = read_cpulist(&system.join("cpu/online"))?;
        let node_dir = system.join("node");
        let entries = std::fs::read_dir(&node_dir)
            .map_err(|e| TopologyError::Unreadable { path: node_dir.clone(), reason: e.to_string() })?;
        let mut nodes = Vec::new();
        for entry in entries {
            let entry = entry
                .map_err(|e| TopologyError::Unreadable { path: node_dir.clone(), reason: e.to_string() })?;
            let name = entry.file_name();
            // Other entries (`online`, `possible`, `has_cpu`, …) are node lists, not nodes.
            let Some(id) = name.to_str().and_then(|n| n.strip_prefix("node")).and_then(|n| n.parse().ok())
            else {
                continue;
            };
            let cpus: Vec<usize> = read_cpulist(&entry.path().join("cpulist"))?
                .into_iter()
                .filter(|c| online.binary_search(c).is_ok() && allowed.contains(c))
                .collect();
            if !cpus.is_empty() {
                nodes.push(Node { id, cpus });
            }
        }
        nodes.sort_by_key(|n| n.id);
        if let Some(cpu) = nodes
            .iter()
            .flat_map(|n| &n.cpus)
            .find(|c| nodes.iter().filter(|n| n.cpus.contains(c)).count() > 1)
        {
            let reason = format!("CPU {cpu} is listed on two nodes");
            return Err(TopologyError::Malformed { path: node_dir, text: String::new(), reason });
        }
        Ok(Topology { nodes })
    }

    /// This machine's nodes, for the CPUs this process may run on.
    fn of_this_process() -> Result<Topology, TopologyError> {
        let allowed: Vec<usize> = core_affinity::get_core_ids()
            .ok_or_else(|| TopologyError::Unreadable {
                path: PathBuf::from("sched_getaffinity"),
                reason: "the process's CPU affinity is unknown".to_string(),
            })?
            .into_iter()
            .map(|c| c.id)
            .collect();
        Topology::read(Path::new("/sys/devices/system"), &allowed)
    }

    /// The index in [`Topology::nodes`] of the node holding `cpu`.
    pub fn node_of(&self, cpu: usize) -> Option<usize> {
        self.nodes.iter().position(|n| n.cpus.contains(&cpu))
    }

    /// "node 0 = CPUs 0-7; node 1 = CPUs 8-15".
    pub fn describe(&self) -> String {
        let nodes: Vec<String> =
            self.nodes.iter().map(|n| format!("node {} = CPUs {}", n.id, format_cpulist(&n.cpus))).collect();
        nodes.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpulists_parse_as_the_kernel_writes_them() {
        assert_eq!(parse_cpulist("0-3,8-11\n").unwrap(), vec![0, 1, 2, 3, 8, 9, 10, 11]);
        assert_eq!(parse_cpulist("5").unwrap(), vec![5]);
        assert_eq!(parse_cpulist("0-1").unwrap(), vec![0, 1]);
        assert_eq!(parse_cpulist("4,0-1,1").unwrap(), vec![0, 1, 4]);
        // A memory-only node lists no CPUs.
        assert_eq!(parse_cpulist("\n").unwrap(), Vec::<usize>::new());
        for cpus in [vec![0, 1, 2, 3, 8, 9, 10, 11], vec![5], vec![0, 2, 3, 4, 7]] {
            assert_eq!(parse_cpulist(&format_cpulist(&cpus)).unwrap(), cpus);
        }
        assert_eq!(format_cpulist(&[0, 2, 3, 4, 7]), "0,2-4,7");
    }

    #[test]
    fn malformed_cpulists_are_errors() {
        for bad in ["3-1", "a", "1-", "-1", ",", "0,,2", "0-3;4", "0-99999999999", "70000"] {
            assert!(parse_cpulist(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// A fake `/sys/devices/system` tree under the system temporary directory, removed on drop.
    struct FakeSys(PathBuf);

    impl FakeSys {
        fn new(name: &str, online: &str, nodes: &[(&str, &str)]) -> FakeSys {
            let root = std::env::temp_dir().join(format!("dsv3-topology-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(root.join("cpu")).unwrap();
            std::fs::write(root.join("cpu/online"), online).unwrap();
            std::fs::create_dir_all(root.join("node")).unwrap();
            // Entries that are not nodes, as on a real machine.
            std::fs::write(root.join("node/online"), "0-1\n").unwrap();
            std::fs::write(root.join("node/has_cpu"), "0-1\n").unwrap();
            for (dir, cpulist) in nodes {
                std::fs::create_dir_all(root.join("node").join(dir)).unwrap();
                std::fs::write(root.join("node").join(dir).join("cpulist"), cpulist).unwrap();
            }
            FakeSys(root)
        }
    }

    impl Drop for FakeSys {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn node(id: usize, cpus: &[usize]) -> Node {
        Node { id, cpus: cpus.to_vec() }
    }

    #[test]
    fn two_nodes_with_gapped_ranges() {
        let sys = FakeSys::new("two", "0-15\n", &[("node1", "4-7,12-15\n"), ("node0", "0-3,8-11\n")]);
        let all: Vec<usize> = (0..16).collect();
        let t = Topology::read(&sys.0, &all).unwrap();
        assert_eq!(
            t.nodes,
            vec![node(0, &[0, 1, 2, 3, 8, 9, 10, 11]), node(1, &[4, 5, 6, 7, 12, 13, 14, 15])]
        );
        assert_eq!(t.node_of(12), Some(1));
        assert_eq!(t.node_of(11), Some(0));
        assert_eq!(t.node_of(16), None);
        assert_eq!(t.describe(), "node 0 = CPUs 0-3,8-11; node 1 = CPUs 4-7,12-15");
        // An affinity mask within node 1 leaves one node.
        let t = Topology::read(&sys.0, &[5, 6]).unwrap();
        assert_eq!(t.nodes, vec![node(1, &[5, 6])]);
    }

    #[test]
    fn four_nodes_with_offline_cpus_a_memory_only_node_and_a_gap() {
        // CPUs 2 and 9 offline (still in their nodes' lists); node 2 has memory only; no node 3.
        let sys = FakeSys::new(
            "four",
            "0-1,3-8,10-15\n",
            &[
                ("node0", "0-3\n"),
                ("node1", "4-7\n"),
                ("node2", "\n"),
                ("node4", "8-11\n"),
                ("node5", "12-15\n"),
            ],
        );
        let all: Vec<usize> = (0..16).collect();
        let t = Topology::read(&sys.0, &all).unwrap();
        assert_eq!(
            t.nodes,
            vec![
                node(0, &[0, 1, 3]),
                node(1, &[4, 5, 6, 7]),
                node(4, &[8, 10, 11]),
                node(5, &[12, 13, 14, 15])
            ]
        );
        assert_eq!(t.node_of(10), Some(2), "an index into the nodes, not the kernel's number");
        assert_eq!(t.node_of(2), None, "offline");
    }

    #[test]
    fn unreadable_or_malformed_trees_are_typed_errors() {
        let sys = FakeSys::new("bad", "0-3\n", &[("node0", "0-1\n"), ("node1", "3-2\n")]);
        match Topology::read(&sys.0, &[0, 1, 2, 3]) {
            Err(TopologyError::Malformed { path, .. }) => {
                assert!(path.ends_with("node1/cpulist"), "{path:?}")
            }
            other => panic!("{other:?}"),
        }
        let sys = FakeSys::new("overlap", "0-3\n", &[("node0", "0-2\n"), ("node1", "2-3\n")]);
        assert!(matches!(Topology::read(&sys.0, &[0, 1, 2, 3]), Err(TopologyError::Malformed { .. })));
        let missing = std::env::temp_dir().join("dsv3-topology-missing-nowhere");
        let err = Topology::read(&missing, &[0]).unwrap_err();
        assert!(matches!(err, TopologyError::Unreadable { .. }));
        assert!(err.to_string().contains("cpu/online"), "{err}");
    }

    /// This machine's tree parses, and every CPU the process may use is on exactly one node.
    #[cfg(target_os = "linux")]
    #[test]
    fn this_machine_parses() {
        let t = this_process().as_ref().expect("sysfs lists the nodes");
        let mut cpus: Vec<usize> = t.nodes.iter().flat_map(|n| n.cpus.clone()).collect();
        cpus.sort_unstable();
        let mut allowed: Vec<usize> = core_affinity::get_core_ids().unwrap().iter().map(|c| c.id).collect();
        allowed.sort_unstable();
        assert_eq!(cpus, allowed);
    }
}
