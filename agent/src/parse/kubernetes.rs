//! The `kubernetes` step: the pod and container a container log belongs to, read
//! from its path, as the tailer's parser chain adds them to every line of the
//! file. The kubelet writes each container's output to
//! `/var/log/pods/<namespace>_<pod>_<pod uid>/<container>/<restart>.log` and links
//! it from `/var/log/containers/<pod>_<namespace>_<container>-<container id>.log`;
//! namespace and pod names cannot hold `_`, so the path alone names them.

use std::path::Path;

/// What a container log's path says; field names as Filebeat's Kubernetes
/// metadata and the Elastic Common Schema have them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodLog {
    namespace: String,
    pod_name: String,
    pod_uid: Option<String>,
    container_name: String,
    container_id: Option<String>,
}

impl PodLog {
    /// The pod log that `path` is, or `None` for any other file.
    pub(crate) fn from_path(path: &Path) -> Option<Self> {
        let parts: Vec<&str> = path
            .iter()
            .map(|part| part.to_str())
            .collect::<Option<_>>()?;
        match parts.as_slice() {
            [.., "pods", pod_dir, container, file] => Self::from_pods_dir(pod_dir, container, file),
            [.., "containers", file] => Self::from_containers_link(file),
            _ => None,
        }
    }

    /// `<namespace>_<pod>_<uid>/<container>/<restart>.log` (or a rotated
    /// `<restart>.log.<time>`).
    fn from_pods_dir(pod_dir: &str, container: &str, file: &str) -> Option<Self> {
        let mut names = pod_dir.splitn(3, '_');
        let (namespace, pod_name, pod_uid) = (names.next()?, names.next()?, names.next()?);
        let restart = file.split('.').next()?;
        let known = |s: &str| !s.is_empty();
        (known(namespace)
            && known(pod_name)
            && known(pod_uid)
            && known(container)
            && file.contains(".log")
            && restart.bytes().all(|b| b.is_ascii_digit()))
        .then(|| Self {
            namespace: namespace.to_owned(),
            pod_name: pod_name.to_owned(),
            pod_uid: Some(pod_uid.to_owned()),
            container_name: container.to_owned(),
            container_id: None,
        })
    }

    /// `<pod>_<namespace>_<container>-<64 hex digits>.log`.
    fn from_containers_link(file: &str) -> Option<Self> {
        let stem = file.strip_suffix(".log")?;
        let mut names = stem.splitn(3, '_');
        let (pod_name, namespace, rest) = (names.next()?, names.next()?, names.next()?);
        let (container, id) = rest.rsplit_once('-')?;
        (!pod_name.is_empty()
            && !namespace.is_empty()
            && !container.is_empty()
            && id.len() == 64
            && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| Self {
            namespace: namespace.to_owned(),
            pod_name: pod_name.to_owned(),
            pod_uid: None,
            container_name: container.to_owned(),
            container_id: Some(id.to_owned()),
        })
    }

    /// The fields every line of the file gets.
    pub(crate) fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("kubernetes.namespace", self.namespace.clone()),
            ("kubernetes.pod.name", self.pod_name.clone()),
            ("kubernetes.container.name", self.container_name.clone()),
        ];
        if let Some(uid) = &self.pod_uid {
            fields.push(("kubernetes.pod.uid", uid.clone()));
        }
        if let Some(id) = &self.container_id {
            fields.push(("container.id", id.clone()));
        }
        fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pods_path_names_namespace_pod_uid_and_container() {
        let log = PodLog::from_path(Path::new(
            "/var/log/pods/shop_checkout-7d9f8c-x2x4q_5c0e7a4e-1f2b-4c3d-9e8f-0a1b2c3d4e5f/server/3.log",
        ))
        .expect("a pod log");
        assert_eq!(
            log.fields(),
            vec![
                ("kubernetes.namespace", "shop".to_owned()),
                ("kubernetes.pod.name", "checkout-7d9f8c-x2x4q".to_owned()),
                ("kubernetes.container.name", "server".to_owned()),
                (
                    "kubernetes.pod.uid",
                    "5c0e7a4e-1f2b-4c3d-9e8f-0a1b2c3d4e5f".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn a_file_the_kubelet_rotated_keeps_its_pod() {
        let log = PodLog::from_path(Path::new(
            "/var/log/pods/kube-system_coredns-5d78c9869d-abcde_0f0e0d0c/coredns/0.log.20261207-101500",
        ))
        .expect("a rotated pod log");
        assert!(
            log.fields()
                .contains(&("kubernetes.namespace", "kube-system".to_owned()))
        );
        assert!(
            log.fields()
                .contains(&("kubernetes.pod.name", "coredns-5d78c9869d-abcde".to_owned()))
        );
    }

    #[test]
    fn a_containers_link_names_pod_namespace_container_and_its_id() {
        let id = "a".repeat(64);
        let log = PodLog::from_path(Path::new(&format!(
            "/var/log/containers/checkout-7d9f8c-x2x4q_shop_server-{id}.log"
        )))
        .expect("a container log link");
        assert_eq!(
            log.fields(),
            vec![
                ("kubernetes.namespace", "shop".to_owned()),
                ("kubernetes.pod.name", "checkout-7d9f8c-x2x4q".to_owned()),
                ("kubernetes.container.name", "server".to_owned()),
                ("container.id", id),
            ]
        );
    }

    #[test]
    fn other_paths_are_no_pod_log() {
        for path in [
            "/var/log/syslog",
            "/var/log/pods/missing-parts/server/0.log",
            "/var/log/pods/ns_pod_uid/server/current.log",
            "/var/log/containers/not-a-container.log",
            "/var/log/containers/pod_ns_server-shortid.log",
            "/srv/app/pods/ns_pod_uid/server/0.txt",
        ] {
            assert_eq!(PodLog::from_path(Path::new(path)), None, "{path}");
        }
    }
}
