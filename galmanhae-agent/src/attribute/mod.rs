//! From a network namespace inode and a cgroup id (both read from the socket in the kernel)
//! to a workload: a container, a pod, a systemd service, a bare namespace, or the host.
//! Only this module knows about Docker and cgroup layouts.

pub mod addresses;
pub mod cgroup_path;
pub mod docker;
pub mod kubernetes;
pub mod nat;
pub mod procfs;

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    path::{Path, PathBuf},
};

use cgroup_path::CgroupIdentity;
pub use cgroup_path::WorkloadKind;

use self::{
    docker::ContainerInfo,
    procfs::{CgroupResolver, ProcessTable},
};

/// Who owns a socket.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Workload {
    pub kind: WorkloadKind,
    /// docker, containerd, podman, cri-o, kubernetes, systemd, host, none.
    pub runtime: String,
    /// Full container id, pod uid, unit name, namespace inode, or `host`.
    pub id: String,
    /// Container name (from the Engine API), unit name, `host`, ...
    pub name: String,
    pub image: Option<String>,
    pub netns: u32,
    /// The namespace is the host's, shared with other workloads: its segment counters are
    /// the whole host's.
    pub netns_shared: bool,
}

/// Resolves owners to workloads, remembering namespaces after their processes exit.
pub struct Attributor {
    docker_socket: PathBuf,
    cgroups: CgroupResolver,
    by_netns: HashMap<u32, Option<CgroupIdentity>>,
    netns_names: HashMap<u32, String>,
    containers: HashMap<String, ContainerInfo>,
    /// Pod uid → `namespace/name` (from the kubelet's pod log directories).
    pods: HashMap<String, String>,
    host_netns: Option<u32>,
    /// One process per namespace, to read its /proc/PID/net files.
    pids: HashMap<u32, i32>,
    /// Local addresses of the other namespaces: who a packet in the host namespace belongs to.
    addresses: HashMap<IpAddr, u32>,
    /// Namespaces whose addresses are known.
    addressed: HashSet<u32>,
    /// Why a source of names is unavailable (shown once in the report).
    pub notes: Vec<String>,
}

impl Attributor {
    pub fn new(docker_socket: &Path) -> Self {
        Self {
            docker_socket: docker_socket.to_owned(),
            cgroups: CgroupResolver::new(),
            by_netns: HashMap::new(),
            netns_names: HashMap::new(),
            containers: HashMap::new(),
            pods: HashMap::new(),
            host_netns: None,
            addresses: HashMap::new(),
            addressed: HashSet::new(),
            pids: HashMap::new(),
            notes: Vec::new(),
        }
    }

    /// Learns the identity of namespaces first seen in this scan. Known ones keep theirs, so a
    /// container that exits mid-window is still named.
    pub fn observe(&mut self, table: &ProcessTable) {
        self.host_netns = table.host_netns.or(self.host_netns);
        self.pids = table
            .netns
            .iter()
            .filter_map(|(netns, info)| Some((*netns, *info.pids.first()?)))
            .collect();
        for (netns, info) in &table.netns {
            if Some(*netns) == self.host_netns {
                continue;
            }
            self.learn_addresses(*netns, info.pids.first().copied());
            if self.by_netns.get(netns).is_some_and(Option::is_some) {
                continue;
            }
            // A namespace's processes all belong to its container or pod; a few suffice.
            let identity = info
                .pids
                .iter()
                .take(8)
                .flat_map(|pid| procfs::cgroup_paths(*pid))
                .find_map(|path| cgroup_path::classify(&path));
            self.by_netns.insert(*netns, identity);
        }
    }

    /// Reads a namespace's addresses until it has some (a container's are set up just after
    /// its namespace is created), then never again: this runs every tick.
    fn learn_addresses(&mut self, netns: u32, pid: Option<i32>) {
        let Some(pid) = pid else {
            return;
        };
        if self.addressed.contains(&netns) {
            return;
        }
        let found = addresses::local_addresses(pid);
        if !found.is_empty() {
            self.addressed.insert(netns);
        }
        for address in found {
            self.addresses.entry(address).or_insert(netns);
        }
    }

    /// The namespace whose interface has `address`, if it is not the host's.
    pub fn netns_of_address(&self, address: IpAddr) -> Option<u32> {
        self.addresses.get(&address).copied()
    }

    /// Every namespace seen in the last scan, with one of its processes.
    pub fn namespaces(&self) -> Vec<(u32, i32)> {
        self.pids.iter().map(|(n, p)| (*n, *p)).collect()
    }

    pub fn pid_of(&self, netns: u32) -> Option<i32> {
        self.pids.get(&netns).copied()
    }

    pub fn host_netns(&self) -> Option<u32> {
        self.host_netns
    }

    /// Refreshes container names (Docker Engine API), pod names (/var/log/pods) and namespace
    /// names (/run/netns). Whether the Docker API answered: `None` when it was not asked (no
    /// socket, or no permission to use it: a choice, see `xtask install --docker-names`).
    pub fn refresh_names(&mut self) -> Option<bool> {
        self.netns_names = procfs::netns_names();
        self.pods = kubernetes::pod_names(Path::new(kubernetes::POD_LOG_DIR));
        if !self.docker_socket.exists() {
            return None;
        }
        let (note, answered) = match docker::containers(&self.docker_socket) {
            Ok(containers) => {
                self.containers.extend(containers);
                return Some(true);
            }
            Err(docker::DockerError::Io { path, source })
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                let note = format!(
                    "no permission to use {path}: containers are named by short id (it is \
                     root-equivalent; to name them, give the agent access, e.g. \
                     `cargo xtask install --docker-names`)"
                );
                (note, None)
            }
            Err(e) => (
                format!("{e}: containers are named by short id"),
                Some(false),
            ),
        };
        if !self.notes.contains(&note) {
            log::info!("{note}");
            self.notes.push(note);
        }
        answered
    }

    /// Forgets a namespace that is gone (a daemon would otherwise remember every container
    /// that ever ran), and the names of containers that no longer run.
    pub fn forget(&mut self, netns: u32) {
        if let Some(Some(identity)) = self.by_netns.remove(&netns) {
            self.containers.remove(&identity.id);
        }
        self.netns_names.remove(&netns);
        self.addresses.retain(|_, owner| *owner != netns);
        self.addressed.remove(&netns);
    }

    /// The workload that owns a socket in `netns` created by a task in cgroup `cgroup_id`.
    pub fn workload(&mut self, netns: u32, cgroup_id: u64) -> Workload {
        if Some(netns) == self.host_netns {
            // Host network: the namespace says nothing, the socket's cgroup does.
            let identity = self.cgroups.path(cgroup_id).and_then(cgroup_path::classify);
            return match identity {
                Some(identity) => self.named(identity, netns, true),
                None => Workload {
                    kind: WorkloadKind::Host,
                    runtime: "host".to_owned(),
                    id: "host".to_owned(),
                    name: "host".to_owned(),
                    image: None,
                    netns,
                    netns_shared: true,
                },
            };
        }
        match self.by_netns.get(&netns).cloned().flatten() {
            Some(identity) => self.named(identity, netns, false),
            None => Workload {
                kind: WorkloadKind::Netns,
                runtime: "none".to_owned(),
                id: netns.to_string(),
                name: self
                    .netns_names
                    .get(&netns)
                    .map_or_else(|| format!("netns-{netns}"), |n| format!("netns:{n}")),
                image: None,
                netns,
                netns_shared: false,
            },
        }
    }

    fn named(&self, identity: CgroupIdentity, netns: u32, netns_shared: bool) -> Workload {
        let info = self.containers.get(&identity.id);
        let name = match (identity.kind, info) {
            (_, Some(info)) => info.name.clone(),
            (WorkloadKind::Container, None) => identity.id.chars().take(12).collect(),
            (WorkloadKind::Pod, None) => {
                self.pods.get(&identity.id).cloned().unwrap_or_else(|| {
                    format!("pod-{}", identity.id.chars().take(8).collect::<String>())
                })
            }
            _ => identity.id.clone(),
        };
        Workload {
            kind: identity.kind,
            runtime: identity.runtime.to_owned(),
            name,
            image: info.map(|i| i.image.clone()),
            id: identity.id,
            netns,
            netns_shared,
        }
    }
}
