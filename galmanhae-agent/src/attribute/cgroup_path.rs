//! What a cgroup path says about its workload: Docker, containerd, podman, CRI-O, Kubernetes
//! pods, systemd services. Works on cgroup v1 and v2 paths, cgroupfs and systemd drivers.

/// What kind of workload a namespace or socket belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WorkloadKind {
    Container,
    Pod,
    Service,
    /// A network namespace with no container in it (`ip netns`, a sandbox).
    Netns,
    Host,
}

impl WorkloadKind {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Container => "container",
            Self::Pod => "pod",
            Self::Service => "service",
            Self::Netns => "netns",
            Self::Host => "host",
        }
    }
}

/// The workload a cgroup path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CgroupIdentity {
    pub(crate) kind: WorkloadKind,
    /// docker, containerd, podman, cri-o, kubernetes, systemd.
    pub(crate) runtime: &'static str,
    /// Container id, pod uid or unit name.
    pub(crate) id: String,
}

/// Classifies one cgroup path; `None` for the root and for paths that name no workload.
pub(crate) fn classify(path: &str) -> Option<CgroupIdentity> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    // Kubernetes first: a pod's containers share its network namespace, so the pod is the
    // workload. kubepods/<qos>/pod<uid>/<id> or kubepods-<qos>-pod<uid>.slice.
    if components.iter().any(|c| c.starts_with("kubepods")) {
        let uid = components.iter().find_map(|c| pod_uid(c))?;
        return Some(CgroupIdentity {
            kind: WorkloadKind::Pod,
            runtime: "kubernetes",
            id: uid,
        });
    }
    for (i, component) in components.iter().enumerate().rev() {
        let scoped = |prefix: &str| {
            component
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(".scope"))
                .filter(|id| is_container_id(id))
        };
        let container = |runtime, id: &str| {
            Some(CgroupIdentity {
                kind: WorkloadKind::Container,
                runtime,
                id: id.to_owned(),
            })
        };
        if let Some(id) = scoped("docker-") {
            return container("docker", id);
        }
        if let Some(id) = scoped("libpod-") {
            return container("podman", id);
        }
        if let Some(id) = scoped("cri-containerd-").or_else(|| scoped("nerdctl-")) {
            return container("containerd", id);
        }
        if let Some(id) = scoped("crio-") {
            return container("cri-o", id);
        }
        if is_container_id(component) && i > 0 {
            // cgroupfs drivers: /docker/<id>, /libpod_parent/libpod-<id>, /<namespace>/<id>.
            let runtime = match components[i - 1] {
                "docker" => "docker",
                p if p.starts_with("libpod") => "podman",
                _ => "containerd",
            };
            return container(runtime, component);
        }
        if let Some(id) = component
            .strip_prefix("libpod-")
            .filter(|id| is_container_id(id))
        {
            return container("podman", id);
        }
    }
    // A systemd service: the innermost *.service (a container's scope was handled above).
    components
        .iter()
        .rev()
        .find(|c| c.ends_with(".service"))
        .map(|unit| CgroupIdentity {
            kind: WorkloadKind::Service,
            runtime: "systemd",
            id: (*unit).to_owned(),
        })
}

/// A name a person can search for, from a cgroup path no layout above knows (a container of
/// plain `ctr` lives in `/<namespace>/<id>`, its id any name): the innermost component
/// without a `.scope` suffix, a 64-digit id shortened to 12, a long one cut. `None` for the
/// root, slices, and the scopes of login sessions and user managers: they name a login, not
/// the workload.
pub(crate) fn leaf_name(path: &str) -> Option<String> {
    const LONGEST: usize = 48;
    let leaf = path.rsplit('/').find(|c| !c.is_empty())?;
    let leaf = leaf.strip_suffix(".scope").unwrap_or(leaf);
    let says_nothing = leaf.starts_with("session-")
        || leaf.starts_with("user@")
        || leaf == "init"
        || leaf.strip_suffix(".slice").is_some();
    if says_nothing {
        return None;
    }
    if is_container_id(leaf) {
        return Some(leaf[..12].to_owned());
    }
    if leaf.chars().count() > LONGEST {
        let cut: String = leaf.chars().take(LONGEST - 1).collect();
        return Some(format!("{cut}\u{2026}"));
    }
    Some(leaf.to_owned())
}

/// 64 lowercase hex digits: the id Docker, containerd, podman and CRI-O give containers.
fn is_container_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid_with_underscores>.slice` (systemd).
fn pod_uid(component: &str) -> Option<String> {
    let component = component.strip_suffix(".slice").unwrap_or(component);
    let at = component.rfind("pod")?;
    let uid = &component[at + 3..];
    (uid.len() >= 32
        && uid
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_'))
    .then(|| uid.replace('_', "-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "1238d68596d70e499b0de089e6d5790ded68ff4c101b46cde9d1eefede8e9238";

    fn runtime_and_id(path: &str) -> Option<(WorkloadKind, &'static str, String)> {
        classify(path).map(|c| (c.kind, c.runtime, c.id))
    }

    #[test]
    fn docker_cgroupfs_and_systemd_drivers() {
        let expected = Some((WorkloadKind::Container, "docker", ID.to_owned()));
        assert_eq!(runtime_and_id(&format!("/docker/{ID}")), expected);
        assert_eq!(
            runtime_and_id(&format!("/system.slice/docker-{ID}.scope")),
            expected
        );
    }

    #[test]
    fn podman_containerd_crio() {
        assert_eq!(
            runtime_and_id(&format!("/machine.slice/libpod-{ID}.scope/container")).map(|c| c.1),
            Some("podman")
        );
        assert_eq!(
            runtime_and_id(&format!("/libpod_parent/libpod-{ID}")).map(|c| c.1),
            Some("podman")
        );
        assert_eq!(
            runtime_and_id(&format!("/system.slice/cri-containerd-{ID}.scope")).map(|c| c.1),
            Some("containerd")
        );
        assert_eq!(
            runtime_and_id(&format!("/default/{ID}")).map(|c| c.1),
            Some("containerd")
        );
        assert_eq!(
            runtime_and_id(&format!("/system.slice/crio-{ID}.scope")).map(|c| c.1),
            Some("cri-o")
        );
    }

    #[test]
    fn kubernetes_pods_both_drivers() {
        let uid = "8d1c4ab0-2f6e-4c4e-9d42-3c1f0e7b9a11";
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
            uid.replace('-', "_")
        );
        let cgroupfs = format!("/kubepods/besteffort/pod{uid}/{ID}");
        for path in [systemd, cgroupfs] {
            assert_eq!(
                runtime_and_id(&path),
                Some((WorkloadKind::Pod, "kubernetes", uid.to_owned())),
                "{path}"
            );
        }
    }

    #[test]
    fn services_and_host() {
        assert_eq!(
            runtime_and_id("/system.slice/postgresql.service"),
            Some((
                WorkloadKind::Service,
                "systemd",
                "postgresql.service".to_owned()
            ))
        );
        assert_eq!(classify("/"), None);
        assert_eq!(classify("/user.slice/user-0.slice/session-1.scope"), None);
    }

    #[test]
    fn unknown_layouts_are_named_by_their_leaf() {
        assert_eq!(classify("/galmanhae-lab/t-ctr"), None);
        assert_eq!(leaf_name("/galmanhae-lab/t-ctr").as_deref(), Some("t-ctr"));
        assert_eq!(leaf_name("/batch/job-7.scope").as_deref(), Some("job-7"));
        assert_eq!(leaf_name(&format!("/x/{ID}/")).as_deref(), Some(&ID[..12]));
        let long = "a".repeat(60);
        let cut = leaf_name(&format!("/x/{long}")).unwrap();
        assert_eq!(cut.chars().count(), 48);
        assert!(cut.ends_with('\u{2026}'));
        for says_nothing in [
            "/",
            "",
            "/user.slice/user-0.slice/session-1.scope",
            "/user.slice/user-0.slice/user@0.service",
            "/init.scope",
            "/system.slice",
        ] {
            assert_eq!(leaf_name(says_nothing), None, "{says_nothing}");
        }
    }
}
