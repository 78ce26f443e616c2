//! The host collector against proc files written to a temporary directory, its
//! parsers alone, and this machine's own /proc and mounts.

use super::cpu::{parse_cpu_ticks, parse_loadavg, parse_uptime};
use super::disks::{DiskStats, is_partition, parse_diskstats};
use super::filesystems::{Mount, parse_mounts, unescape_mount_field};
use super::memory::parse_meminfo;
use super::network::{InterfaceStats, TrafficCounters, parse_net_dev};
use super::*;
use vigil_proto::labels::find;
use vigil_proto::v1::{MetricKind, ValueType, sample};

const MEMINFO: &str = "MemTotal:       16318480 kB\nMemFree:         1210396 kB\nMemAvailable:    9418820 kB\nBuffers:          530108 kB\nCached:          7081224 kB\nSwapCached:        12345 kB\nSwapTotal:       2097148 kB\nSwapFree:        2097148 kB\nHugePages_Total:       0\n";
const STAT: &str = "cpu  4705 356 584 3699176 23060 0 277 0 0 0\ncpu0 1393280 32966 572056 13343292 6130 0 17875 0 0 0\nintr 1462898\n";
const DISKSTATS: &str = "\
   7       0 loop0 12 0 24 1 0 0 0 0 0 4 1 0 0 0 0 0 0
 259       0 nvme0n1 2449289 32419 97677034 12441921 165576 189924 190100304 1013284 0 351224 13493095 77320 77 119933288 36175 14545 1713
 259       1 nvme0n1p1 100 0 800 5 10 0 80 1 0 6 6 0 0 0 0 0 0
   8       0 sda 10 0 16 0 20 0 40 0 0 2500 0
   8       1 sda1 5 0 8 0 10 0 20 0 0 1000 0
 253       0 dm-0 7 0 56 0 3 0 24 0 0 1999 0
   1       0 ram0 0 0 0 0 0 0 0 0 0 0 0
";
const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 2198116786  497541    0    0    0     0          0         0 2198116786  497541    0    0    0     0       0          0
  eth0:18446744073709551615   19878    3    4    0     0          0         0  1198082   11063    5    6    0     0       0          0
";
const MOUNTS: &str = "\
proc /proc proc rw,relatime 0 0
/dev/vda / ext4 rw,relatime 0 0
tmpfs /dev/shm tmpfs rw,relatime 0 0
/dev/vdb /srv/my\\040data ext4 rw 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw 0 0
";

fn collector(proc_root: &Path) -> HostCollector {
    HostCollector::new(&HostMetricsConfig {
        proc_root: proc_root.to_owned(),
        ..HostMetricsConfig::default()
    })
    .unwrap()
}

fn write_proc(root: &Path, files: &[(&str, &str)]) {
    for (name, text) in files {
        let path = root.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<sample::Value> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(key, value)| find(&s.labels, key) == Some(*value))
        })
        .and_then(|s| s.value)
}

#[test]
fn uptime_and_load_are_read() {
    assert_eq!(parse_uptime("350735.47 234388.90\n"), Ok(350735.47));
    assert_eq!(
        parse_loadavg("0.20 0.18 0.12 1/80 11206\n"),
        Ok([0.20, 0.18, 0.12])
    );
}

#[test]
fn memory_is_converted_to_bytes() {
    let memory = parse_meminfo(MEMINFO).unwrap();
    assert_eq!(
        memory,
        [
            ("host.memory.total_bytes", 16318480 * 1024),
            ("host.memory.available_bytes", 9418820 * 1024),
            ("host.memory.free_bytes", 1210396 * 1024),
            ("host.memory.buffers_bytes", 530108 * 1024),
            ("host.memory.cached_bytes", 7081224 * 1024),
            ("host.swap.total_bytes", 2097148 * 1024),
            ("host.swap.free_bytes", 2097148 * 1024),
        ]
    );
}

#[test]
fn cpu_ticks_come_from_the_aggregate_line() {
    assert_eq!(
        parse_cpu_ticks(STAT).unwrap(),
        [
            ("user", 4705),
            ("nice", 356),
            ("system", 584),
            ("idle", 3699176),
            ("iowait", 23060),
            ("irq", 0),
            ("softirq", 277),
            ("steal", 0),
        ]
    );
    assert_eq!(parse_cpu_ticks("cpu  1 2 3 4\n").unwrap().len(), 4);
}

#[test]
fn disk_counters_are_read_per_device() {
    let disks = parse_diskstats(DISKSTATS).unwrap();
    assert_eq!(disks.len(), 7);
    assert_eq!(
        disks[1],
        DiskStats {
            name: "nvme0n1".into(),
            reads: 2449289,
            sectors_read: 97677034,
            writes: 165576,
            sectors_written: 190100304,
            io_milliseconds: 351224,
        }
    );
    let names: BTreeSet<&str> = disks.iter().map(|d| d.name.as_str()).collect();
    let partitions: Vec<&str> = disks
        .iter()
        .map(|d| d.name.as_str())
        .filter(|name| is_partition(name, &names))
        .collect();
    assert_eq!(partitions, ["nvme0n1p1", "sda1"]);
}

#[test]
fn interface_counters_are_read_per_interface() {
    let interfaces = parse_net_dev(NET_DEV).unwrap();
    assert_eq!(interfaces.len(), 2);
    assert_eq!(
        interfaces[1],
        InterfaceStats {
            name: "eth0".into(),
            received: TrafficCounters {
                bytes: u64::MAX,
                packets: 19878,
                errors: 3,
                dropped: 4,
            },
            sent: TrafficCounters {
                bytes: 1198082,
                packets: 11063,
                errors: 5,
                dropped: 6,
            },
        }
    );
}

#[test]
fn mounts_are_read_with_escapes_decoded() {
    let mounts = parse_mounts(MOUNTS).unwrap();
    assert_eq!(mounts.len(), 5);
    assert_eq!(
        mounts[3],
        Mount {
            device: "/dev/vdb".into(),
            mount_point: "/srv/my data".into(),
            fs_type: "ext4".into(),
        }
    );
    assert_eq!(unescape_mount_field(r"a\134b\011c\1"), "a\\b\tc\\1");
}

#[test]
fn malformed_text_gets_a_clear_error() {
    assert_eq!(parse_uptime(""), Err("the file is empty".into()));
    assert_eq!(parse_uptime("abc 1"), Err("`abc` is not a number".into()));
    assert_eq!(
        parse_loadavg("0.1 0.2"),
        Err("the 15 minute load average is missing".into())
    );
    assert_eq!(
        parse_meminfo("MemTotal: 12 kB\n"),
        Err("no `MemAvailable` line".into())
    );
    assert_eq!(
        parse_meminfo(
            "MemTotal: 1 kB\nMemAvailable: 1 kB\nMemFree: 1 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n"
        )
        .map(|memory| memory.len()),
        Ok(5),
        "Buffers and Cached may be missing"
    );
    assert_eq!(
        parse_meminfo("MemTotal: lots\n"),
        Err("line 1: `MemTotal` has no whole number".into())
    );
    assert_eq!(
        parse_cpu_ticks("intr 1\ncpu  1 x 3 4\n"),
        Err("line 2: `nice` is `x`, not a whole number".into())
    );
    assert_eq!(
        parse_cpu_ticks("cpu0 1 2 3 4\n"),
        Err("no aggregate `cpu` line".into())
    );
    assert_eq!(
        parse_diskstats("   8 0 sda 1 2 3\n"),
        Err("line 1: 6 columns, expected at least 14".into())
    );
    assert_eq!(
        parse_diskstats("8 0 sda 1 0 2 0 3 0 x 0 0 7 0\n"),
        Err("line 1: sectors written of `sda` is `x`, not a whole number".into())
    );
    assert_eq!(
        parse_net_dev("a|b\nc|d\n  eth0: 1 2 3\n"),
        Err("line 3: `eth0` has 3 counters, expected 16".into())
    );
    assert_eq!(
        parse_net_dev("a|b\nc|d\n  eth0 1 2 3\n"),
        Err("line 3: no `name:` before the counters".into())
    );
    assert_eq!(
        parse_net_dev("a|b\nc|d\n  eth0: 1 -2 3\n"),
        Err("line 3: `eth0` has `-2`, not a whole number".into())
    );
    assert_eq!(
        parse_net_dev("garbage\n"),
        Err("no header line: not the format of /proc/net/dev".into())
    );
    assert_eq!(
        parse_mounts("/dev/vda /\n"),
        Err("line 1: expected `device mount_point type ...`, got `/dev/vda /`".into())
    );
}

#[test]
fn one_bad_file_leaves_the_other_metrics() {
    let proc_root = tempfile::tempdir().unwrap();
    write_proc(
        proc_root.path(),
        &[
            ("uptime", "12.5 3.0\n"),
            ("loadavg", "garbage\n"),
            ("meminfo", MEMINFO),
            ("stat", STAT),
            ("diskstats", "8 0 sda 1 2\n"),
            ("net/dev", NET_DEV),
            ("1/mounts", "proc /proc proc rw 0 0\n"),
        ],
    );

    let (samples, errors) = collector(proc_root.path()).collect(42);
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [
            format!(
                "{} could not be parsed: `garbage` is not a number",
                proc_root.path().join("loadavg").display()
            ),
            format!(
                "{} could not be parsed: line 1: 5 columns, expected at least 14",
                proc_root.path().join("diskstats").display()
            ),
        ]
    );
    assert_eq!(
        errors
            .iter()
            .map(HostMetricError::source)
            .collect::<Vec<_>>(),
        ["loadavg", "diskstats"]
    );
    assert_eq!(samples.len(), 1 + 7 + 8 + 2 * 8);
    assert!(samples.iter().all(|s| s.time_unix_nano == 42));
    let uptime = &samples[0];
    assert_eq!(
        (
            uptime.name.as_str(),
            uptime.value,
            uptime.metric_set.as_str()
        ),
        (
            "host.uptime.seconds",
            Some(sample::Value::Gauge(12.5)),
            "host.uptime"
        )
    );
    let idle = samples
        .iter()
        .find(|s| s.labels.iter().any(|l| l.value == "idle"))
        .unwrap();
    assert_eq!(idle.name, "host.cpu.ticks");
    assert_eq!(idle.kind, MetricKind::Counter as i32);
    assert_eq!(idle.value_type, ValueType::Counter64 as i32);
    assert_eq!(idle.value, Some(sample::Value::Counter(3699176)));
    let in_octets = samples
        .iter()
        .find(|s| s.name == "if.in.octets" && find(&s.labels, "ifName") == Some("eth0"))
        .unwrap();
    assert_eq!(in_octets.value, Some(sample::Value::Counter(u64::MAX)));
    assert_eq!(
        (in_octets.kind, in_octets.metric_set.as_str()),
        (MetricKind::Counter as i32, "if")
    );
}

#[test]
fn disks_and_interfaces_follow_the_selection() {
    let proc_root = tempfile::tempdir().unwrap();
    write_proc(
        proc_root.path(),
        &[("diskstats", DISKSTATS), ("net/dev", NET_DEV)],
    );
    let (samples, _) = collector(proc_root.path()).collect(1);
    let devices: BTreeSet<&str> = samples
        .iter()
        .filter(|s| s.name == "host.disk.reads")
        .filter_map(|s| find(&s.labels, "device"))
        .collect();
    assert_eq!(devices, BTreeSet::from(["nvme0n1", "sda", "dm-0"]));
    let nvme = [("device", "nvme0n1")];
    assert_eq!(
        value(&samples, "host.disk.read.bytes", &nvme),
        Some(sample::Value::Counter(97677034 * 512))
    );
    assert_eq!(
        value(&samples, "host.disk.written.bytes", &nvme),
        Some(sample::Value::Counter(190100304 * 512))
    );
    assert_eq!(
        value(&samples, "host.disk.writes", &nvme),
        Some(sample::Value::Counter(165576))
    );
    assert_eq!(
        value(&samples, "host.disk.io_time.seconds", &nvme),
        Some(sample::Value::Counter(351))
    );

    let mut config = HostMetricsConfig {
        proc_root: proc_root.path().to_owned(),
        ..HostMetricsConfig::default()
    };
    config.disks.partitions = true;
    config.disks.include = vec!["sd*".into()];
    config.interfaces.exclude = vec!["lo".into()];
    let (samples, _) = HostCollector::new(&config).unwrap().collect(1);
    let devices: BTreeSet<&str> = samples
        .iter()
        .filter(|s| s.name == "host.disk.reads")
        .filter_map(|s| find(&s.labels, "device"))
        .collect();
    assert_eq!(devices, BTreeSet::from(["sda", "sda1"]));
    let interfaces: BTreeSet<&str> = samples
        .iter()
        .filter(|s| s.name == "if.out.discards")
        .filter_map(|s| find(&s.labels, "ifName"))
        .collect();
    assert_eq!(interfaces, BTreeSet::from(["eth0"]));
}

#[test]
fn file_system_usage_is_read_for_real_mounts_only() {
    let proc_root = tempfile::tempdir().unwrap();
    let mount_root = tempfile::tempdir().unwrap();
    std::fs::create_dir(mount_root.path().join("data")).unwrap();
    write_proc(
        proc_root.path(),
        &[(
            "self/mounts",
            "proc /proc proc rw 0 0\n/dev/vdz /data ext4 rw 0 0\n/dev/vdy /gone ext4 rw 0 0\ntmpfs /data tmpfs rw 0 0\n",
        )],
    );
    let config = HostMetricsConfig {
        proc_root: proc_root.path().to_owned(),
        mount_root: mount_root.path().to_owned(),
        ..HostMetricsConfig::default()
    };
    let (samples, errors) = HostCollector::new(&config).unwrap().collect(1);
    let fs_samples: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.metric_set == "host.fs")
        .collect();
    assert_eq!(fs_samples.len(), 3, "{fs_samples:?}");
    let size = fs_samples[0];
    assert_eq!(size.name, "host.fs.size_bytes");
    assert_eq!(find(&size.labels, "mountpoint"), Some("/data"));
    assert_eq!(find(&size.labels, "device"), Some("tmpfs"));
    assert_eq!(find(&size.labels, "fstype"), Some("tmpfs"));
    let Some(sample::Value::Gauge(bytes)) = size.value else {
        panic!("size is not a gauge: {size:?}");
    };
    assert!(bytes > 0.0);
    let usage_errors: Vec<String> = errors
        .iter()
        .filter(|e| e.source() == "statvfs")
        .map(ToString::to_string)
        .collect();
    assert_eq!(usage_errors.len(), 1);
    assert!(
        usage_errors[0].starts_with("the usage of the file system at /gone could not be read:"),
        "{usage_errors:?}"
    );
}

#[test]
fn a_missing_file_is_reported_by_path() {
    let proc_root = tempfile::tempdir().unwrap();
    let (samples, errors) = collector(proc_root.path()).collect(1);
    assert!(samples.is_empty());
    assert_eq!(errors.len(), 7);
    assert!(errors[0].to_string().starts_with(&format!(
        "{} could not be read:",
        proc_root.path().join("uptime").display()
    )));
    assert_eq!(errors[6].source(), "mounts");
}

#[test]
fn the_real_proc_parses() {
    let (samples, errors) = collector(Path::new("/proc")).collect(1);
    assert!(errors.is_empty(), "{errors:?}");
    for name in [
        "host.memory.cached_bytes",
        "host.cpu.ticks",
        "if.in.octets",
        "host.fs.size_bytes",
    ] {
        assert!(samples.iter().any(|s| s.name == name), "no {name}");
    }
    let root = [("mountpoint", "/")];
    assert!(value(&samples, "host.fs.available_bytes", &root).is_some());
}
