//! From a network namespace inode and a cgroup id (both read from the socket in the kernel)
//! to a workload: a container, a pod, a systemd service, a bare namespace, or the host.
//! Only this module knows about Docker and cgroup layouts.

pub(crate) mod addresses;
pub(crate) mod cgroup_path;
pub(crate) mod docker;
pub(crate) mod docker_names;
pub(crate) mod kubernetes;
pub(crate) mod nat;
pub(crate) mod procfs;

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    path::Path,
    sync::Arc,
    time::Duration,
};

use cgroup_path::CgroupIdentity;
pub(crate) use cgroup_path::WorkloadKind;

use self::{
    docker_names::DockerNames,
    procfs::{CgroupResolver, ProcessTable},
};

/// How long a pass that sees a new Docker container waits for its name: long enough for a
/// healthy daemon, short enough that a hung one does not hold up a scrape.
const NAME_WAIT: Duration = Duration::from_millis(300);

/// Who owns a socket.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Workload {
    pub(crate) kind: WorkloadKind,
    /// docker, containerd, podman, cri-o, kubernetes, systemd, host, none.
    pub(crate) runtime: Arc<str>,
    /// Full container id, pod uid, unit name, namespace inode, or `host`.
    pub(crate) id: Arc<str>,
    /// Container name (from the Engine API), unit name, `host`, ...
    pub(crate) name: Arc<str>,
    pub(crate) image: Option<Arc<str>>,
    pub(crate) netns: u32,
    /// The namespace is the host's, shared with other workloads: its segment counters are
    /// the whole host's.
    pub(crate) netns_shared: bool,
}

/// What `hashbrown`'s `entry_ref` makes a key from: the workload, cloned only when new.
impl From<&Workload> for Workload {
    fn from(workload: &Workload) -> Self {
        workload.clone()
    }
}

/// Resolves owners to workloads, remembering namespaces after their processes exit.
pub(crate) struct Attributor {
    docker: DockerNames,
    cgroups: CgroupResolver,
    by_netns: HashMap<u32, Option<CgroupIdentity>>,
    /// Names of namespaces no layout classifies: a cgroup leaf, or `comm-pid`.
    fallback_names: HashMap<u32, String>,
    /// The namespaces of the last scan: one that left it and comes back is classified again
    /// (the kernel reuses inodes).
    present: HashSet<u32>,
    netns_names: HashMap<u32, String>,
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
    pub(crate) notes: Vec<String>,
    /// The workloads named since the last scan, by namespace and (host network) cgroup: a
    /// pass names the owner of each of thousands of flows and drops, mostly the same few.
    named_now: HashMap<(u32, u64), Workload>,
}

impl Attributor {
    pub(crate) fn new(docker_socket: &Path) -> Self {
        Self {
            docker: DockerNames::start(docker_socket),
            cgroups: CgroupResolver::new(),
            by_netns: HashMap::new(),
            fallback_names: HashMap::new(),
            present: HashSet::new(),
            netns_names: HashMap::new(),
            pods: HashMap::new(),
            host_netns: None,
            addresses: HashMap::new(),
            addressed: HashSet::new(),
            pids: HashMap::new(),
            notes: Vec::new(),
            named_now: HashMap::new(),
        }
    }

    /// Learns the identity of namespaces first seen in this scan. Known ones keep theirs, so a
    /// container that exits mid-window is still named; one that left a scan and comes back
    /// is learned again.
    pub(crate) fn observe(&mut self, table: &ProcessTable) {
        self.named_now.clear();
        self.host_netns = table.host_netns.or(self.host_netns);
        self.pids = table
            .netns
            .iter()
            .filter_map(|(netns, info)| Some((*netns, *info.pids.first()?)))
            .collect();
        let returned: Vec<u32> = table
            .netns
            .keys()
            .filter(|n| !self.present.contains(n) && self.by_netns.contains_key(n))
            .copied()
            .collect();
        for netns in returned {
            log::debug!("namespace {netns} is back: classifying it again");
            self.unlearn(netns);
        }
        self.present = table.netns.keys().copied().collect();
        let mut unnamed_container = false;
        for (netns, info) in &table.netns {
            if Some(*netns) == self.host_netns {
                continue;
            }
            self.learn_addresses(*netns, info.pids.first().copied());
            if self.by_netns.get(netns).is_some_and(Option::is_some) {
                continue;
            }
            let identity = self.classify(*netns, &info.pids);
            unnamed_container |= identity
                .as_ref()
                .is_some_and(|i| i.runtime == "docker" && self.docker.get(&i.id).is_none());
            self.by_netns.insert(*netns, identity);
        }
        // Its first series should carry its name, not its short id.
        if unnamed_container && self.docker.answered().is_some() {
            self.docker.refresh_within(NAME_WAIT);
        }
    }

    /// A namespace's identity from its processes' cgroups (they all belong to its container or
    /// pod; a few suffice); when no layout knows them, a fallback name for it.
    fn classify(&mut self, netns: u32, pids: &[i32]) -> Option<CgroupIdentity> {
        let paths: Vec<String> = pids
            .iter()
            .take(8)
            .flat_map(|pid| procfs::cgroup_paths(*pid))
            .collect();
        let identity = paths.iter().find_map(|path| cgroup_path::classify(path));
        if identity.is_none() && !self.fallback_names.contains_key(&netns) {
            let name = paths
                .iter()
                .find_map(|path| cgroup_path::leaf_name(path))
                .or_else(|| {
                    let pid = *pids.first()?;
                    Some(format!("{}-{pid}", procfs::comm(pid)?))
                });
            if let Some(name) = name {
                self.fallback_names.insert(netns, name);
            }
        }
        identity
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
    pub(crate) fn netns_of_address(&self, address: IpAddr) -> Option<u32> {
        self.addresses.get(&address).copied()
    }

    /// Every namespace seen in the last scan, with one of its processes.
    pub(crate) fn namespaces(&self) -> Vec<(u32, i32)> {
        self.pids.iter().map(|(n, p)| (*n, *p)).collect()
    }

    pub(crate) fn pid_of(&self, netns: u32) -> Option<i32> {
        self.pids.get(&netns).copied()
    }

    pub(crate) fn host_netns(&self) -> Option<u32> {
        self.host_netns
    }

    /// Refreshes pod names (/var/log/pods) and namespace names (/run/netns), and asks the
    /// names thread for fresh container names (Docker Engine API) without waiting; see
    /// [`Self::docker_answered`] for how the last ask went.
    pub(crate) fn refresh_names(&mut self) {
        self.named_now.clear();
        self.netns_names = procfs::netns_names();
        self.pods = kubernetes::pod_names(Path::new(kubernetes::POD_LOG_DIR));
        self.docker.wake();
        if let Some(note) = self.docker.note()
            && !self.notes.contains(&note)
        {
            log::info!("{note}");
            self.notes.push(note);
        }
    }

    /// Whether the Docker API answered its last ask; `None` when it was not asked (no socket,
    /// or no permission to use it: a choice, see `xtask install --docker-names`).
    pub(crate) fn docker_answered(&self) -> Option<bool> {
        self.docker.answered()
    }

    /// Whether the workload is a container its runtime no longer lists.
    pub(crate) fn removed(&self, workload: &Workload) -> bool {
        workload.kind == WorkloadKind::Container
            && self.docker.get(&workload.id).is_some_and(|k| k.removed)
    }

    /// Forgets a namespace that is gone (a daemon would otherwise remember every container
    /// that ever ran), and the names of containers that no longer run.
    pub(crate) fn forget(&mut self, netns: u32) {
        self.unlearn(netns);
        self.netns_names.remove(&netns);
        self.present.remove(&netns);
    }

    /// Drops what was learned of a namespace: identity, fallback name, addresses.
    fn unlearn(&mut self, netns: u32) {
        self.named_now.clear();
        self.by_netns.remove(&netns);
        self.fallback_names.remove(&netns);
        self.addresses.retain(|_, owner| *owner != netns);
        self.addressed.remove(&netns);
    }

    /// The workload that owns a socket in `netns` created by a task in cgroup `cgroup_id`.
    pub(crate) fn workload(&mut self, netns: u32, cgroup_id: u64) -> Workload {
        // Outside the host's namespace the namespace alone names the workload.
        let host = Some(netns) == self.host_netns;
        let key = (netns, if host { cgroup_id } else { 0 });
        if let Some(workload) = self.named_now.get(&key) {
            return workload.clone();
        }
        let workload = self.name(netns, cgroup_id, host);
        self.named_now.insert(key, workload.clone());
        workload
    }

    /// `host`: `netns` is the host's.
    fn name(&mut self, netns: u32, cgroup_id: u64, host: bool) -> Workload {
        if host {
            // Host network: the namespace says nothing, the socket's cgroup does.
            let identity = self.cgroups.path(cgroup_id).and_then(cgroup_path::classify);
            return match identity {
                Some(identity) => self.named(identity, netns, true),
                None => Workload {
                    kind: WorkloadKind::Host,
                    runtime: "host".into(),
                    id: "host".into(),
                    name: "host".into(),
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
                runtime: "none".into(),
                id: netns.to_string().into(),
                name: self
                    .netns_names
                    .get(&netns)
                    .map_or_else(
                        || {
                            self.fallback_names
                                .get(&netns)
                                .cloned()
                                .unwrap_or_else(|| format!("netns-{netns}"))
                        },
                        |n| format!("netns:{n}"),
                    )
                    .into(),
                image: None,
                netns,
                netns_shared: false,
            },
        }
    }

    fn named(&self, identity: CgroupIdentity, netns: u32, netns_shared: bool) -> Workload {
        let known = self.docker.get(&identity.id);
        let info = known.as_ref().map(|k| &k.info);
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
            runtime: identity.runtime.into(),
            name: name.into(),
            image: info.map(|i| i.image.as_str().into()),
            id: identity.id.into(),
            netns,
            netns_shared,
        }
    }
}
