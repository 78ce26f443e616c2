//! File-system usage: the mounts of /proc/1/mounts (or /proc/self/mounts), chosen
//! by mount point and type, measured with statvfs under the mount root, as the
//! `host.fs` samples of the host's batch.

use super::{HostCollector, HostMetricError, Samples, read};
use std::collections::BTreeMap;
use vigil_proto::labels::label;

impl HostCollector {
    /// Usage of every selected mount: one error per mount that fails.
    pub(super) fn filesystems(&self, samples: &mut Samples) -> Vec<HostMetricError> {
        let mounts = match self.mounts() {
            Ok(mounts) => mounts,
            Err(error) => return vec![error],
        };
        let mut errors = Vec::new();
        for mount in mounts {
            if self.excluded_fs_types.contains(&mount.fs_type)
                || !self.mount_points.selects(&mount.mount_point)
            {
                continue;
            }
            let path = self
                .mount_root
                .join(mount.mount_point.trim_start_matches('/'));
            let usage = match rustix::fs::statvfs(&path) {
                Ok(usage) => usage,
                Err(cause) => {
                    errors.push(HostMetricError::Usage {
                        mount_point: mount.mount_point,
                        cause: cause.into(),
                    });
                    continue;
                }
            };
            if usage.f_blocks == 0 {
                continue;
            }
            let block = usage.f_frsize;
            let labels = [
                label("mountpoint", &mount.mount_point),
                label("device", &mount.device),
                label("fstype", &mount.fs_type),
            ];
            let size = usage.f_blocks.saturating_mul(block);
            let used = usage
                .f_blocks
                .saturating_sub(usage.f_bfree)
                .saturating_mul(block);
            let available = usage.f_bavail.saturating_mul(block);
            for (name, bytes) in [
                ("host.fs.size_bytes", size),
                ("host.fs.used_bytes", used),
                ("host.fs.available_bytes", available),
            ] {
                samples.gauge(name, bytes as f64, "By", "host.fs", &labels);
            }
        }
        errors
    }

    /// The mounts of the host: those of its init process, which a container with
    /// the host's /proc sees too, or this process's own when that is unreadable.
    /// A mount point mounted over keeps only its last mount.
    fn mounts(&self) -> Result<Vec<Mount>, HostMetricError> {
        let mounts = read(&self.proc_root, "1/mounts", parse_mounts)
            .or_else(|_| read(&self.proc_root, "self/mounts", parse_mounts))?;
        let mut by_mount_point = BTreeMap::new();
        for mount in mounts {
            by_mount_point.insert(mount.mount_point.clone(), mount);
        }
        Ok(by_mount_point.into_values().collect())
    }
}

/// One line of a mounts file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Mount {
    pub(super) device: String,
    pub(super) mount_point: String,
    pub(super) fs_type: String,
}

/// Every mount of a mounts file (`device mount_point type options 0 0`), with the
/// octal escapes of spaces, tabs and backslashes decoded.
pub(super) fn parse_mounts(text: &str) -> Result<Vec<Mount>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            let mut fields = line.split_whitespace();
            match (fields.next(), fields.next(), fields.next()) {
                (Some(device), Some(mount_point), Some(fs_type)) => Ok(Mount {
                    device: unescape_mount_field(device),
                    mount_point: unescape_mount_field(mount_point),
                    fs_type: fs_type.to_owned(),
                }),
                _ => Err(format!(
                    "line {}: expected `device mount_point type ...`, got `{line}`",
                    index + 1
                )),
            }
        })
        .collect()
}

/// Decodes the `\ooo` octal escapes the kernel writes for space, tab, newline and
/// backslash in mount fields.
pub(super) fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut position = 0;
    while position < bytes.len() {
        let escape = bytes.get(position + 1..position + 4);
        let octal = escape.filter(|digits| {
            bytes[position] == b'\\' && digits.iter().all(|digit| (b'0'..=b'7').contains(digit))
        });
        match octal.and_then(|digits| u8::from_str_radix(std::str::from_utf8(digits).ok()?, 8).ok())
        {
            Some(byte) => {
                decoded.push(byte);
                position += 4;
            }
            None => {
                decoded.push(bytes[position]);
                position += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}
