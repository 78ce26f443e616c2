//! The container collector against cgroup trees written to a temporary directory
//! (v2, and v1 hierarchies of hybrid hosts), the parsers of cgroup files alone, and
//! this machine's own cgroups.

use super::cgroup_files::{
    CpuQuota, DeviceIo, parse_blkio, parse_cfs_period, parse_cfs_quota, parse_cpu_list,
    parse_cpu_max, parse_io_stat, parse_keyed, parse_limit, parse_number,
};
use super::discovery::ContainerIdentity;
use super::*;
use std::path::Path;
use vigil_proto::labels::find;
use vigil_proto::v1::sample;

const DOCKER_ID: &str = "3f4e1c5b9a7d2e6f8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f";

fn write(root: &Path, files: &[(&str, &str)]) {
    for (name, text) in files {
        let path = root.join(name.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

fn collector(root: &Path, include: &[&str]) -> ContainerCollector {
    ContainerCollector::new(&ContainerMetricsConfig {
        cgroup_root: root.to_owned(),
        include: include.iter().map(|glob| (*glob).to_owned()).collect(),
        ..ContainerMetricsConfig::default()
    })
    .unwrap()
}

fn value(samples: &[Sample], name: &str, cgroup: &str) -> Option<sample::Value> {
    samples
        .iter()
        .find(|s| s.name == name && find(&s.labels, "cgroup.path") == Some(cgroup))
        .and_then(|s| s.value)
}

#[test]
fn containers_are_recognised_by_their_cgroup_path() {
    let docker = identify(&format!("/system.slice/docker-{DOCKER_ID}.scope"));
    assert_eq!(docker.id.as_deref(), Some(DOCKER_ID));
    assert_eq!(docker.runtime, Some("docker"));
    assert_eq!(docker.pod_uid, None);
    assert_eq!(
        identify(&format!("/docker/{DOCKER_ID}")).runtime,
        Some("docker")
    );

    let kubernetes_systemd = identify(&format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0a1b2c3d_4e5f_6789_abcd_ef0123456789.slice/cri-containerd-{DOCKER_ID}.scope"
    ));
    assert_eq!(
        kubernetes_systemd,
        ContainerIdentity {
            id: Some(DOCKER_ID.into()),
            runtime: Some("containerd"),
            pod_uid: Some("0a1b2c3d-4e5f-6789-abcd-ef0123456789".into()),
        }
    );
    let kubernetes_cgroupfs = identify(&format!(
        "/kubepods/besteffort/pod0a1b2c3d-4e5f-6789-abcd-ef0123456789/{DOCKER_ID}"
    ));
    assert_eq!(kubernetes_cgroupfs.id.as_deref(), Some(DOCKER_ID));
    assert_eq!(kubernetes_cgroupfs.runtime, None);
    assert_eq!(
        kubernetes_cgroupfs.pod_uid.as_deref(),
        Some("0a1b2c3d-4e5f-6789-abcd-ef0123456789")
    );
    let crio = identify(&format!(
        "/kubepods.slice/kubepods-pod0a1b2c3d_4e5f_6789_abcd_ef0123456789.slice/crio-{DOCKER_ID}.scope"
    ));
    assert_eq!(crio.runtime, Some("cri-o"));
    assert!(crio.pod_uid.is_some());
    let podman = identify(&format!("/machine.slice/libpod-{DOCKER_ID}.scope"));
    assert_eq!(podman.runtime, Some("podman"));

    for not_a_container in [
        "/".to_owned(),
        "/system.slice/sshd.service".to_owned(),
        format!("/machine.slice/libpod-conmon-{DOCKER_ID}.scope"),
        format!("/kubepods.slice/kubepods-burstable.slice/crio-conmon-{DOCKER_ID}.scope"),
        "/kubepods.slice/kubepods-pod0a1b2c3d_4e5f_6789_abcd_ef0123456789.slice".to_owned(),
        format!("/system.slice/docker-{}.scope", &DOCKER_ID[..12]),
    ] {
        assert_eq!(identify(&not_a_container).id, None, "{not_a_container}");
    }
}

#[test]
fn cgroup_files_are_parsed() {
    let stat = parse_keyed("usage_usec 3500\nuser_usec 2000\nsystem_usec 1500\n").unwrap();
    assert_eq!(stat.get("user_usec"), Some(2000));
    assert_eq!(stat.get("nr_periods"), None);
    assert_eq!(parse_number("123456\n"), Ok(123456));
    assert_eq!(parse_limit("max\n"), Ok(None));
    assert_eq!(parse_limit("1048576\n"), Ok(Some(1048576)));
    assert_eq!(
            parse_io_stat("8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n253:1 rbytes=1 wbytes=0 rios=1 wios=0\n")
                .unwrap(),
            [
                DeviceIo {
                    device: "8:0".into(),
                    read_bytes: 4096,
                    written_bytes: 8192,
                    reads: 1,
                    writes: 2,
                },
                DeviceIo {
                    device: "253:1".into(),
                    read_bytes: 1,
                    written_bytes: 0,
                    reads: 1,
                    writes: 0,
                },
            ]
        );
    assert_eq!(
        parse_blkio("8:0 Read 4096\n8:0 Write 512\n8:0 Sync 0\n8:0 Total 4608\nTotal 4608\n"),
        Ok(vec![("8:0".into(), 4096, 512)])
    );
}

#[test]
fn cpu_quotas_and_lists_are_parsed() {
    assert_eq!(parse_cpu_max("max 100000\n"), Ok(None));
    let half = parse_cpu_max("50000 100000\n").unwrap().unwrap();
    assert_eq!(
        half,
        CpuQuota {
            quota_us: 50000,
            period_us: 100000,
        }
    );
    assert_eq!(half.cores(), 0.5);
    assert_eq!(
        parse_cpu_max("250000 50000\n")
            .unwrap()
            .map(CpuQuota::cores),
        Some(5.0)
    );
    assert_eq!(parse_cfs_quota("-1\n"), Ok(None));
    assert_eq!(parse_cfs_quota("150000\n"), Ok(Some(150000)));
    assert_eq!(parse_cfs_period("100000\n"), Ok(100000));
    assert_eq!(parse_cpu_list("0-3\n"), Ok(4));
    assert_eq!(parse_cpu_list("0-3,8,10-11\n"), Ok(7));
    assert_eq!(parse_cpu_list("5\n"), Ok(1));
    assert_eq!(parse_cpu_list("\n"), Ok(0));
}

#[test]
fn malformed_cgroup_files_get_a_clear_error() {
    assert_eq!(
        parse_keyed("usage_usec 12\nnr_periods many\n"),
        Err("line 2: `nr_periods` is `many`, not a whole number".into())
    );
    assert_eq!(
        parse_keyed("usage_usec\n"),
        Err("line 1: expected `key value`, got `usage_usec`".into())
    );
    assert_eq!(parse_number(""), Err("the file is empty".into()));
    assert_eq!(
        parse_number("-1\n"),
        Err("`-1` is not a whole number".into())
    );
    assert_eq!(
        parse_limit("unlimited"),
        Err("`unlimited` is not a whole number".into())
    );
    assert_eq!(
        parse_io_stat("sda rbytes=1\n"),
        Err("line 1: `sda` is not a `major:minor` device number".into())
    );
    assert_eq!(
        parse_io_stat("8:0 rbytes\n"),
        Err("line 1: `rbytes` is not `key=value`".into())
    );
    assert_eq!(
        parse_blkio("8:0 Read lots\n"),
        Err("line 1: `8:0 Read` is `lots`, not a whole number".into())
    );
    assert_eq!(
        parse_blkio("garbage\n"),
        Err("line 1: expected `major:minor operation value`, got `garbage`".into())
    );
}

#[test]
fn malformed_cpu_quotas_and_lists_get_a_clear_error() {
    assert_eq!(parse_cpu_max(""), Err("the file is empty".into()));
    assert_eq!(
        parse_cpu_max("max\n"),
        Err("expected `quota period`, got `max`".into())
    );
    assert_eq!(
        parse_cpu_max("fifty 100000\n"),
        Err("the quota `fifty` is neither `max` nor a positive whole number".into())
    );
    assert_eq!(
        parse_cpu_max("50000 0\n"),
        Err("the period `0` is not a positive whole number".into())
    );
    assert_eq!(
        parse_cpu_max("50000 100000 1\n"),
        Err("expected `quota period`, got `50000 100000 1`".into())
    );
    assert_eq!(parse_cfs_quota(""), Err("the file is empty".into()));
    assert_eq!(
        parse_cfs_quota("-2\n"),
        Err("the quota `-2` is neither `-1` nor a positive whole number".into())
    );
    assert_eq!(
        parse_cfs_quota("0\n"),
        Err("the quota `0` is neither `-1` nor a positive whole number".into())
    );
    assert_eq!(
        parse_cfs_period("-1\n"),
        Err("the period `-1` is not a positive whole number".into())
    );
    assert_eq!(
        parse_cpu_list("0-3,x\n"),
        Err("`x` is not a CPU number or range `first-last`".into())
    );
    assert_eq!(
        parse_cpu_list("0-\n"),
        Err("`0-` is not a CPU number or range `first-last`".into())
    );
    assert_eq!(
        parse_cpu_list("3-1\n"),
        Err("the range `3-1` ends before it starts".into())
    );
}

#[test]
fn cgroup_v2_cores_come_from_cpu_max_and_the_cpusets() {
    let root = tempfile::tempdir().unwrap();
    let half = format!("/system.slice/docker-{DOCKER_ID}.scope");
    let pinned = format!("/kubepods.slice/cri-containerd-{DOCKER_ID}.scope");
    let unlimited = format!("/machine.slice/libpod-{DOCKER_ID}.scope");
    let broken = format!("/system.slice/crio-{DOCKER_ID}.scope");
    let stat = "usage_usec 3500\nuser_usec 2000\nsystem_usec 1500\n";
    write(
        root.path(),
        &[
            ("cgroup.controllers", "cpuset cpu memory\n"),
            ("cpuset.cpus.effective", "0-7\n"),
            (&format!("{half}/cpu.stat"), stat),
            (&format!("{half}/cpu.max"), "50000 100000\n"),
            (&format!("{half}/cpuset.cpus.effective"), "0-7\n"),
            (&format!("{pinned}/cpu.stat"), stat),
            (&format!("{pinned}/cpu.max"), "400000 100000\n"),
            (&format!("{pinned}/cpuset.cpus.effective"), "2-3\n"),
            (&format!("{unlimited}/cpu.stat"), stat),
            (&format!("{unlimited}/cpu.max"), "max 100000\n"),
            (&format!("{broken}/cpu.stat"), stat),
            (&format!("{broken}/cpu.max"), "fifty 100000\n"),
            (&format!("{broken}/cpuset.cpus.effective"), "0-1\n"),
            (&format!("{broken}/memory.current"), "4096\n"),
        ],
    );

    let (samples, errors) = collector(root.path(), &["/"]).collect(1);
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [format!(
            "{} could not be parsed: the quota `fifty` is neither `max` nor a positive whole number",
            root.path().join(&broken[1..]).join("cpu.max").display()
        )]
    );
    assert_eq!(errors[0].source(), "cpu");
    let cores = |cgroup: &str| {
        ["container.cpu.limit_cores", "container.cpu.available_cores"]
            .map(|name| value(&samples, name, cgroup))
    };
    let gauge = |cores: f64| Some(sample::Value::Gauge(cores));
    assert_eq!(cores(&half), [gauge(0.5), gauge(0.5)]);
    assert_eq!(cores(&pinned), [gauge(4.0), gauge(2.0)]);
    assert_eq!(cores(&unlimited), [None, gauge(8.0)]);
    assert_eq!(cores("/"), [None, gauge(8.0)]);
    assert_eq!(cores(&broken), [None, None]);
    assert_eq!(
        value(&samples, "container.cpu.usage.microseconds", &broken),
        Some(sample::Value::Counter(3500)),
        "a bad cpu.max spares the CPU time"
    );
    assert_eq!(
        value(&samples, "container.memory.usage_bytes", &broken),
        Some(sample::Value::Gauge(4096.0))
    );
    let limit = samples
        .iter()
        .find(|s| s.name == "container.cpu.limit_cores")
        .unwrap();
    assert_eq!(limit.unit, "{cpu}");
    assert_eq!(limit.metric_set, "container.cpu");
    assert_eq!(find(&limit.labels, "container.id"), Some(DOCKER_ID));
}

#[test]
fn cgroup_v1_cores_come_from_the_cfs_quota_and_the_cpusets() {
    let root = tempfile::tempdir().unwrap();
    let limited = format!("/docker/{DOCKER_ID}");
    let unlimited =
        format!("/kubepods/besteffort/pod0a1b2c3d-4e5f-6789-abcd-ef0123456789/{DOCKER_ID}");
    let broken = format!("/machine.slice/libpod-{DOCKER_ID}.scope");
    let mut files = vec![
        ("unified/cgroup.controllers".to_owned(), "".to_owned()),
        ("cpuset/cpuset.cpus".to_owned(), "0-3\n".to_owned()),
        (format!("cpuset{limited}/cpuset.cpus"), "0-3\n".to_owned()),
        (format!("cpuset{unlimited}/cpuset.cpus"), "1,3\n".to_owned()),
        (format!("cpuset{broken}/cpuset.cpus"), "0-3\n".to_owned()),
        (
            format!("cpu{limited}/cpu.cfs_quota_us"),
            "150000\n".to_owned(),
        ),
        (
            format!("cpu{limited}/cpu.cfs_period_us"),
            "100000\n".to_owned(),
        ),
        (
            format!("cpu{unlimited}/cpu.cfs_quota_us"),
            "-1\n".to_owned(),
        ),
        (
            format!("cpu{unlimited}/cpu.cfs_period_us"),
            "100000\n".to_owned(),
        ),
        (
            format!("cpu{broken}/cpu.cfs_quota_us"),
            "50000\n".to_owned(),
        ),
        (format!("cpu{broken}/cpu.cfs_period_us"), "0\n".to_owned()),
    ];
    for cgroup in [&limited, &unlimited, &broken] {
        files.push((format!("cpuacct{cgroup}/cpuacct.usage"), "5000000\n".into()));
    }
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(name, text)| (name.as_str(), text.as_str()))
        .collect();
    write(root.path(), &files);

    let (samples, errors) = collector(root.path(), &[]).collect(1);
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [format!(
            "{} could not be parsed: the period `0` is not a positive whole number",
            root.path()
                .join("cpu")
                .join(&broken[1..])
                .join("cpu.cfs_period_us")
                .display()
        )]
    );
    let cores = |cgroup: &str| {
        ["container.cpu.limit_cores", "container.cpu.available_cores"]
            .map(|name| value(&samples, name, cgroup))
    };
    let gauge = |cores: f64| Some(sample::Value::Gauge(cores));
    assert_eq!(cores(&limited), [gauge(1.5), gauge(1.5)]);
    assert_eq!(cores(&unlimited), [None, gauge(2.0)]);
    assert_eq!(cores(&broken), [None, None]);
    assert_eq!(
        value(&samples, "container.cpu.usage.microseconds", &broken),
        Some(sample::Value::Counter(5000))
    );
}

#[test]
fn the_hosts_cpus_are_the_online_ones_beside_the_cgroup_root() {
    let host = tempfile::tempdir().unwrap();
    let docker = format!("/system.slice/docker-{DOCKER_ID}.scope");
    write(
        host.path(),
        &[
            ("sys/devices/system/cpu/online", "0-5\n"),
            ("sys/fs/cgroup/cgroup.controllers", "cpuset cpu\n"),
            ("sys/fs/cgroup/cpuset.cpus.effective", "0-1\n"),
            (&format!("sys/fs/cgroup{docker}/cpu.stat"), "usage_usec 1\n"),
            (&format!("sys/fs/cgroup{docker}/cpu.max"), "max 100000\n"),
        ],
    );
    let root = host.path().join("sys/fs/cgroup");
    let (samples, errors) = collector(&root, &[]).collect(1);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        value(&samples, "container.cpu.available_cores", &docker),
        Some(sample::Value::Gauge(6.0))
    );

    write(host.path(), &[("sys/devices/system/cpu/online", "0-\n")]);
    let (samples, errors) = collector(&root, &[]).collect(1);
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].to_string(),
        format!(
            "{} could not be parsed: `0-` is not a CPU number or range `first-last`",
            host.path().join("sys/devices/system/cpu/online").display()
        )
    );
    assert_eq!(errors[0].source(), "cpu");
    assert_eq!(
        value(&samples, "container.cpu.usage.microseconds", &docker),
        Some(sample::Value::Counter(1))
    );
    assert_eq!(
        value(&samples, "container.cpu.available_cores", &docker),
        None
    );
}

#[test]
fn cgroup_v2_containers_are_read_and_a_bad_file_spares_the_rest() {
    let root = tempfile::tempdir().unwrap();
    let docker = format!("/system.slice/docker-{DOCKER_ID}.scope");
    write(
        root.path(),
        &[
            ("cgroup.controllers", "cpuset cpu io memory pids\n"),
            ("/system.slice/sshd.service/memory.current", "100\n"),
            (
                &format!("{docker}/cpu.stat"),
                "usage_usec 3500\nuser_usec 2000\nsystem_usec 1500\nnr_periods 10\nnr_throttled 2\nthrottled_usec 700\n",
            ),
            (&format!("{docker}/memory.current"), "1000000\n"),
            (&format!("{docker}/memory.max"), "max\n"),
            (
                &format!("{docker}/memory.stat"),
                "anon 600000\nfile 300000\nkernel 50000\nshmem 0\ninactive_file 100000\npgfault 42\npgmajfault 1\n",
            ),
            (
                &format!("{docker}/io.stat"),
                "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
            ),
            (&format!("{docker}/pids.current"), "oops\n"),
            (&format!("{docker}/pids.max"), "100\n"),
        ],
    );

    let (samples, errors) = collector(root.path(), &[]).collect(7);
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [format!(
            "{} could not be parsed: `oops` is not a whole number",
            root.path()
                .join(&docker[1..])
                .join("pids.current")
                .display()
        )]
    );
    assert_eq!(errors[0].source(), "pids");
    assert!(
        samples
            .iter()
            .all(|s| find(&s.labels, "cgroup.path") == Some(docker.as_str())),
        "only the container is reported unless included"
    );
    let first = &samples[0];
    assert_eq!(find(&first.labels, "container.id"), Some(DOCKER_ID));
    assert_eq!(find(&first.labels, "container.runtime"), Some("docker"));
    assert_eq!(first.time_unix_nano, 7);
    let counter = |name| value(&samples, name, &docker);
    assert_eq!(
        counter("container.cpu.usage.microseconds"),
        Some(sample::Value::Counter(3500))
    );
    assert_eq!(
        counter("container.cpu.throttled.periods"),
        Some(sample::Value::Counter(2))
    );
    assert_eq!(
        counter("container.cpu.throttled.microseconds"),
        Some(sample::Value::Counter(700))
    );
    assert_eq!(
        counter("container.memory.usage_bytes"),
        Some(sample::Value::Gauge(1000000.0))
    );
    assert_eq!(counter("container.memory.limit_bytes"), None);
    assert_eq!(
        counter("container.memory.working_set_bytes"),
        Some(sample::Value::Gauge(900000.0))
    );
    assert_eq!(
        counter("container.memory.kernel_bytes"),
        Some(sample::Value::Gauge(50000.0))
    );
    assert_eq!(
        counter("container.memory.major_page_faults"),
        Some(sample::Value::Counter(1))
    );
    let written = samples
        .iter()
        .find(|s| s.name == "container.io.written.bytes")
        .unwrap();
    assert_eq!(find(&written.labels, "device"), Some("8:0"));
    assert_eq!(written.value, Some(sample::Value::Counter(8192)));
    assert_eq!(counter("container.pids.current"), None);

    let (samples, _) = collector(root.path(), &["/system.slice/*.service"]).collect(7);
    assert_eq!(
        value(
            &samples,
            "container.memory.usage_bytes",
            "/system.slice/sshd.service"
        ),
        Some(sample::Value::Gauge(100.0))
    );
}

#[test]
fn cgroup_v1_hierarchies_are_read_on_hybrid_hosts() {
    let root = tempfile::tempdir().unwrap();
    let docker = format!("/docker/{DOCKER_ID}");
    write(
        root.path(),
        &[
            ("unified/cgroup.controllers", ""),
            (&format!("cpuacct{docker}/cpuacct.usage"), "5000000\n"),
            (&format!("cpuacct{docker}/cpuacct.usage_user"), "3000000\n"),
            (&format!("cpuacct{docker}/cpuacct.usage_sys"), "2000000\n"),
            (
                &format!("cpu{docker}/cpu.stat"),
                "nr_periods 20\nnr_throttled 5\nthrottled_time 9000\n",
            ),
            (
                &format!("memory{docker}/memory.usage_in_bytes"),
                "2000000\n",
            ),
            (
                &format!("memory{docker}/memory.limit_in_bytes"),
                "9223372036854771712\n",
            ),
            (
                &format!("memory{docker}/memory.stat"),
                "cache 1\nrss 2\ntotal_cache 500000\ntotal_rss 1400000\ntotal_inactive_file 250000\ntotal_pgfault 9\ntotal_pgmajfault 0\n",
            ),
            (
                &format!("blkio{docker}/blkio.throttle.io_service_bytes"),
                "8:0 Read 4096\n8:0 Write 1024\n8:0 Total 5120\nTotal 5120\n",
            ),
            (
                &format!("blkio{docker}/blkio.throttle.io_serviced"),
                "8:0 Read 2\n8:0 Write 1\n8:0 Total 3\nTotal 3\n",
            ),
            (&format!("pids{docker}/pids.current"), "4\n"),
            (&format!("pids{docker}/pids.max"), "max\n"),
            ("memory/memory.usage_in_bytes", "7000000\n"),
            ("memory/memory.limit_in_bytes", "9223372036854771712\n"),
        ],
    );
    let (samples, errors) = collector(root.path(), &[]).collect(1);
    assert!(errors.is_empty(), "{errors:?}");
    let read = |name| value(&samples, name, &docker);
    assert_eq!(
        read("container.cpu.usage.microseconds"),
        Some(sample::Value::Counter(5000))
    );
    assert_eq!(
        read("container.cpu.system.microseconds"),
        Some(sample::Value::Counter(2000))
    );
    assert_eq!(
        read("container.cpu.throttled.microseconds"),
        Some(sample::Value::Counter(9))
    );
    assert_eq!(
        read("container.memory.usage_bytes"),
        Some(sample::Value::Gauge(2000000.0))
    );
    assert_eq!(read("container.memory.limit_bytes"), None);
    assert_eq!(
        read("container.memory.anon_bytes"),
        Some(sample::Value::Gauge(1400000.0))
    );
    assert_eq!(
        read("container.memory.working_set_bytes"),
        Some(sample::Value::Gauge(1750000.0))
    );
    assert_eq!(read("container.io.reads"), Some(sample::Value::Counter(2)));
    assert_eq!(
        read("container.io.written.bytes"),
        Some(sample::Value::Counter(1024))
    );
    assert_eq!(
        read("container.pids.current"),
        Some(sample::Value::Gauge(4.0))
    );
    assert_eq!(read("container.pids.limit"), None);
    assert_eq!(value(&samples, "container.memory.usage_bytes", "/"), None);
}

#[test]
fn discovery_is_bounded() {
    let root = tempfile::tempdir().unwrap();
    write(root.path(), &[("cgroup.controllers", "memory\n")]);
    for index in 0..5 {
        std::fs::create_dir(root.path().join(format!("slice-{index}"))).unwrap();
    }
    let config = ContainerMetricsConfig {
        cgroup_root: root.path().to_owned(),
        max_cgroups: 3,
        ..ContainerMetricsConfig::default()
    };
    let (_, errors) = ContainerCollector::new(&config).unwrap().collect(1);
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].to_string(),
        format!(
            "{} has more than 3 cgroups (`container_metrics.max_cgroups`); the rest is skipped",
            root.path().canonicalize().unwrap().display()
        )
    );
    assert_eq!(errors[0].source(), "discovery");
}

/// Reads this machine's /sys/fs/cgroup (v2, or v1 on hybrid hosts): the root
/// cgroup always has CPU and memory accounting, and the cgroup this test runs
/// in is found by the walk.
#[test]
fn this_machines_cgroups_are_found_and_read() {
    let root = Path::new("/sys/fs/cgroup");
    let (samples, errors) = collector(root, &["/", "/*", "/*/*"]).collect(1);
    assert!(errors.is_empty(), "{errors:?}");
    let cgroups: BTreeSet<&str> = samples
        .iter()
        .filter_map(|s| find(&s.labels, "cgroup.path"))
        .collect();
    assert!(
        !cgroups.is_empty(),
        "no cgroup found under {}",
        root.display()
    );

    let with_cpu_and_memory: Vec<&str> = cgroups
        .iter()
        .copied()
        .filter(|cgroup| {
            matches!(
                value(&samples, "container.cpu.usage.microseconds", cgroup),
                Some(sample::Value::Counter(usage)) if usage > 0
            )
        })
        .filter(|cgroup| {
            let memory = value(&samples, "container.memory.usage_bytes", cgroup)
                .or_else(|| value(&samples, "container.memory.anon_bytes", cgroup));
            matches!(memory, Some(sample::Value::Gauge(bytes)) if bytes > 0.0)
        })
        .collect();
    assert!(
        !with_cpu_and_memory.is_empty(),
        "no cgroup with CPU and memory among {cgroups:?}"
    );
    assert!(
        matches!(
            value(&samples, "container.cpu.available_cores", "/"),
            Some(sample::Value::Gauge(cores)) if cores >= 1.0
        ),
        "the root cgroup may use no CPU"
    );

    let own_memory_cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .unwrap()
        .lines()
        .find_map(|line| {
            let (_, rest) = line.split_once(':')?;
            let (controllers, path) = rest.split_once(':')?;
            (controllers.split(',').any(|c| c == "memory") || controllers.is_empty())
                .then(|| path.to_owned())
        });
    if let Some(own) = own_memory_cgroup.filter(|path| path.matches('/').count() <= 2) {
        assert!(
            value(&samples, "container.memory.usage_bytes", &own).is_some() || own == "/",
            "this process's cgroup {own} was not read; found {cgroups:?}"
        );
    }
}
