//! Pod names without the API server or the CRI socket: the kubelet keeps one directory per pod
//! of the node under `/var/log/pods`, named `<namespace>_<name>_<uid>` (kubelet 1.14+; see
//! `BuildPodLogsDirectory` in kubernetes/pkg/kubelet/kuberuntime/helpers.go). Namespaces and
//! pod names are DNS names, so they hold no `_`.

use std::{collections::HashMap, path::Path};

/// Where the kubelet keeps pod logs (the `DaemonSet` mounts it read-only).
pub(crate) const POD_LOG_DIR: &str = "/var/log/pods";

/// Pod uid → `namespace/name`, for the pods of this node; empty when the directory is absent
/// (not a Kubernetes node) or unreadable.
pub(crate) fn pod_names(dir: &Path) -> HashMap<String, String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return HashMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| parse(entry.file_name().to_str()?))
        .collect()
}

fn parse(directory: &str) -> Option<(String, String)> {
    let mut parts = directory.splitn(3, '_');
    let (namespace, name, uid) = (parts.next()?, parts.next()?, parts.next()?);
    let uid_like = uid.len() >= 32 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    (!namespace.is_empty() && !name.is_empty() && uid_like)
        .then(|| (uid.to_owned(), format!("{namespace}/{name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "9a2b3c4d-1111-2222-3333-444455556666";

    #[test]
    fn directories_name_pods() {
        assert_eq!(
            parse(&format!("kube-system_coredns-7db6d8ff4d-x2x9q_{UID}")),
            Some((
                UID.to_owned(),
                "kube-system/coredns-7db6d8ff4d-x2x9q".to_owned()
            ))
        );
        assert_eq!(parse("not-a-pod"), None);
        assert_eq!(parse("default_web_notauid"), None);
        assert_eq!(parse(&format!("_web_{UID}")), None);
    }

    #[test]
    fn reads_a_directory_and_survives_its_absence() {
        let dir = std::env::temp_dir().join(format!("galmanhae-pods-{}", std::process::id()));
        std::fs::create_dir_all(dir.join(format!("shop_checkout-0_{UID}"))).expect("a pod dir");
        std::fs::create_dir_all(dir.join("stray")).expect("a stray dir");
        let names = pod_names(&dir);
        std::fs::remove_dir_all(&dir).expect("cleaning up");
        assert_eq!(names.len(), 1);
        assert_eq!(names[UID], "shop/checkout-0");
        assert!(pod_names(&dir).is_empty());
    }
}
