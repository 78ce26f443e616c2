//! Discovery of the cgroups the container collector reads: the walk of each
//! hierarchy (bounded by `max_cgroups`), and the container id, runtime and pod a
//! cgroup's path tells, which label every sample of that cgroup.

use super::ContainerMetricError;
use std::collections::BTreeSet;
use std::path::Path;
use vigil_proto::labels::label;
use vigil_proto::v1::Label;

/// Path prefixes of container cgroups, and the runtime each names.
const RUNTIME_PREFIXES: [(&str, &str); 4] = [
    ("docker-", "docker"),
    ("cri-containerd-", "containerd"),
    ("crio-", "cri-o"),
    ("libpod-", "podman"),
];

/// Who runs the processes of a cgroup, as far as its path tells.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct ContainerIdentity {
    pub(super) id: Option<String>,
    pub(super) runtime: Option<&'static str>,
    pub(super) pod_uid: Option<String>,
}

/// Recognises containers of Docker (`/docker/<id>`, `docker-<id>.scope`),
/// containerd (`cri-containerd-<id>.scope`), CRI-O (`crio-<id>.scope`), Podman
/// (`libpod-<id>.scope`) and Kubernetes pods (`kubepods…pod<uid>…`) by the last
/// component of the cgroup path; a conmon or pod cgroup is no container.
pub(super) fn identify(cgroup: &str) -> ContainerIdentity {
    let components: Vec<&str> = cgroup.split('/').filter(|c| !c.is_empty()).collect();
    let kubernetes = components.iter().any(|c| c.starts_with("kubepods"));
    let pod_uid = if kubernetes {
        components.iter().find_map(|component| pod_uid(component))
    } else {
        None
    };
    let Some(last) = components.last() else {
        return ContainerIdentity::default();
    };
    let name = last.strip_suffix(".scope").unwrap_or(last);
    let parent = components
        .len()
        .checked_sub(2)
        .map(|index| components[index]);
    let (id, runtime) = RUNTIME_PREFIXES
        .iter()
        .find_map(|(prefix, runtime)| {
            name.strip_prefix(prefix)
                .filter(|id| is_container_id(id))
                .map(|id| (Some(id.to_owned()), Some(*runtime)))
        })
        .unwrap_or_else(|| {
            if is_container_id(name) {
                let runtime = match parent {
                    Some("docker") => Some("docker"),
                    Some("libpod_parent") => Some("podman"),
                    _ => None,
                };
                (Some(name.to_owned()), runtime)
            } else {
                (None, None)
            }
        });
    ContainerIdentity {
        id,
        runtime,
        pod_uid,
    }
}

/// 64 lowercase hexadecimal digits, as every runtime names its containers.
fn is_container_id(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The pod uid of `pod<uid>` (cgroupfs driver) or `kubepods-<qos>-pod<uid>.slice`
/// (systemd driver, dashes written as underscores).
fn pod_uid(component: &str) -> Option<String> {
    let name = component.strip_suffix(".slice").unwrap_or(component);
    let uid = name
        .strip_prefix("pod")
        .or_else(|| name.rsplit_once("-pod").map(|(_, uid)| uid))?
        .replace('_', "-");
    (uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')).then_some(uid)
}

/// The labels of every sample of `cgroup`.
pub(super) fn identity_labels(cgroup: &str, identity: &ContainerIdentity) -> Vec<Label> {
    let mut labels = vec![label("cgroup.path", cgroup)];
    if let Some(id) = &identity.id {
        labels.push(label("container.id", id));
    }
    if let Some(runtime) = identity.runtime {
        labels.push(label("container.runtime", runtime));
    }
    if let Some(uid) = &identity.pod_uid {
        labels.push(label("kubernetes.pod.uid", uid));
    }
    labels
}

/// Adds every directory below `root` (itself included) to `cgroups`, as a path
/// from the hierarchy's root; stops after `limit` directories.
pub(super) fn walk(
    root: &Path,
    limit: usize,
    cgroups: &mut BTreeSet<String>,
) -> Result<(), ContainerMetricError> {
    let mut pending = vec![(root.to_owned(), String::from("/"))];
    let mut visited = 0;
    while let Some((dir, cgroup)) = pending.pop() {
        visited += 1;
        if visited > limit {
            return Err(ContainerMetricError::TooManyCgroups {
                path: root.display().to_string(),
                limit,
            });
        }
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(cause) if dir == root => {
                return Err(ContainerMetricError::Read {
                    controller: "discovery",
                    path: root.display().to_string(),
                    cause,
                });
            }
            Err(_) => continue,
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let child = if cgroup == "/" {
                format!("/{name}")
            } else {
                format!("{cgroup}/{name}")
            };
            pending.push((entry.path(), child));
        }
        cgroups.insert(cgroup);
    }
    Ok(())
}
