//! The all-in-one pipeline: agent sources, the derive, alert and index stages in one
//! process on the in-process bus, with rules and derive definitions from watched
//! folders, documents
//! written to NDJSON files and alerts printed. The same source, rule and alert
//! code as a deployment; only the transport and the sinks differ.
//!
//! With no log file given it writes an example application log of its own, JSON
//! lines read through the agent's `json` preset (with an occasional burst of
//! ERROR lines), so a fresh machine shows logs, host metrics and alerts flowing
//! within a minute. A log file given by name is parsed by the preset its name
//! suggests (`syslog`, `auth.log`, nginx or Apache access and error logs).

use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use vigil_agent::config::{HostMetricsConfig, LogFileConfig};
use vigil_agent::parse::{ParserStep, ParsersConfig, Preset};
use vigil_agent::{Agent, AgentConfig};
use vigil_aggregator::alert::notify::NotifyConfig;
use vigil_aggregator::alert::{AlertStage, AlertStageConfig};
use vigil_aggregator::derive::{DeriveStage, DeriveStageConfig};
use vigil_aggregator::index::{DocumentSink, IndexNames, IndexStage, IndexStageConfig, NdjsonSink};
use vigil_aggregator::rule_source::RuleSource;
use vigil_config::duration::unix_nanos;
use vigil_proto::Payload;
use vigil_proto::v1::{MetricBatch, Sample, sample};
use vigil_runtime::{Bus, Health, SelfMetrics, Subscription};

/// The example rules shipped in `rules/`, used when the rules folder is missing.
const SHIPPED_RULES: [(&str, &str); 3] = [
    ("host.yaml", include_str!("../../rules/host.yaml")),
    ("app-logs.yaml", include_str!("../../rules/app-logs.yaml")),
    ("network.yaml", include_str!("../../rules/network.yaml")),
];

/// The example derive definitions shipped in `derive/`, used when the definitions
/// folder is missing.
const SHIPPED_DEFINITIONS: [(&str, &str); 1] =
    [("fleet.yaml", include_str!("../../derive/fleet.yaml"))];

/// File name of the example application log, JSON lines.
const EXAMPLE_LOG: &str = "app.json";

/// What the all-in-one mode runs on.
#[derive(Debug, Clone)]
pub(crate) struct AllInOneOptions {
    /// Checkpoints, documents and the example log go here.
    pub(crate) data_dir: PathBuf,
    /// Folder of rule files, watched; the shipped examples are used if it is missing.
    pub(crate) rules_dir: PathBuf,
    /// Folder of derive definitions, watched; the shipped examples are used if it
    /// is missing.
    pub(crate) definitions_dir: PathBuf,
    /// Log files to tail; empty means "write and tail an example log".
    pub(crate) log_files: Vec<PathBuf>,
    /// Time between host metric readings.
    pub(crate) host_interval: Duration,
}

/// Runs everything until `shutdown`; the first stage that fails stops the rest.
pub(crate) async fn run(
    options: AllInOneOptions,
    metrics: SelfMetrics,
    health: Health,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let data_dir = &options.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data folder {}", data_dir.display()))?;
    let bus = Bus::in_memory();

    let rules_dir = if options.rules_dir.is_dir() {
        options.rules_dir.clone()
    } else {
        write_shipped(&data_dir.join("rules"), &SHIPPED_RULES)?
    };
    let rules = RuleSource::Folder(rules_dir.clone()).watch(shutdown.clone())?;
    let definitions_dir = if options.definitions_dir.is_dir() {
        options.definitions_dir.clone()
    } else {
        write_shipped(&data_dir.join("derive"), &SHIPPED_DEFINITIONS)?
    };
    let definitions = RuleSource::Folder(definitions_dir.clone()).watch(shutdown.clone())?;

    // Every consumer subscribes before the agent publishes its first batch.
    let alert_config = AlertStageConfig {
        notify: NotifyConfig::console(),
        allowed_lateness: Duration::from_secs(2),
        ..AlertStageConfig::default()
    };
    let alert = AlertStage::new(&bus, rules, alert_config, &metrics)?;
    let derive_config = DeriveStageConfig {
        allowed_lateness: Duration::from_secs(5),
        default_interval: options.host_interval,
        ..DeriveStageConfig::default()
    };
    let derive = DeriveStage::new(&bus, definitions, derive_config, &metrics)?;
    let documents_dir = data_dir.join("documents");
    let index = IndexStage::new(
        &bus,
        DocumentSink::Ndjson(NdjsonSink::new(&documents_dir)?),
        IndexNames::default(),
        IndexStageConfig::default(),
        &metrics,
    )?;
    let console = bus.subscribe("console", &[bus.topics().metrics_raw()])?;

    let mut tasks = JoinSet::new();
    let log_files = if options.log_files.is_empty() {
        let example = data_dir.join("example").join(EXAMPLE_LOG);
        let writer = ExampleLog::create(&example)?;
        let stop = shutdown.clone();
        tasks.spawn(async move { writer.run(stop).await });
        vec![example]
    } else {
        options.log_files.clone()
    };

    let agent_config = AgentConfig {
        data_dir: data_dir.join("agent"),
        logs: log_files.iter().map(|path| log_entry(path)).collect(),
        host_metrics: HostMetricsConfig {
            interval: options.host_interval,
            ..HostMetricsConfig::default()
        },
        ..AgentConfig::default()
    };
    agent_config.validate()?;
    let agent = Agent::new(agent_config, bus.clone(), metrics.clone(), health);

    println!("Vigil all-in-one");
    println!(
        "  rules      {} (edit a file: it applies at once)",
        rules_dir.display()
    );
    println!(
        "  derive     {} (rates and KPIs built in; aggregates here)",
        definitions_dir.display()
    );
    for path in &log_files {
        match preset_for(path) {
            Some((preset, _)) => println!("  tailing    {} ({preset:?})", path.display()),
            None => println!("  tailing    {}", path.display()),
        }
    }
    println!("  documents  {}/*.ndjson", documents_dir.display());
    println!("  stop with Ctrl-C\n");

    let stop = shutdown.clone();
    tasks.spawn(async move { derive.run(stop).await.map_err(anyhow::Error::from) });
    let stop = shutdown.clone();
    tasks.spawn(async move { alert.run(stop).await.map_err(anyhow::Error::from) });
    let stop = shutdown.clone();
    tasks.spawn(async move { index.run(stop).await.map_err(anyhow::Error::from) });
    let stop = shutdown.clone();
    tasks.spawn(async move { agent.run(stop).await.map_err(anyhow::Error::from) });
    let stop = shutdown.clone();
    tasks.spawn(async move { print_host_metrics(console, stop).await });

    let mut outcome = Ok(());
    while let Some(finished) = tasks.join_next().await {
        let result = finished.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(error) = result {
            if outcome.is_ok() {
                outcome = Err(error);
            }
            shutdown.cancel();
        }
    }
    outcome
}

/// The `logs[]` entry of a file to tail: its dataset and preset by its name.
fn log_entry(path: &Path) -> LogFileConfig {
    match preset_for(path) {
        Some((preset, dataset)) => LogFileConfig {
            parsers: ParsersConfig {
                steps: vec![ParserStep::Preset(preset)],
            },
            ..LogFileConfig::new(absolute(path), dataset)
        },
        None => LogFileConfig::new(absolute(path), "app"),
    }
}

/// The preset (and dataset) a log file's name suggests: the example log and
/// `*.json` files are JSON lines, `syslog`, `auth.log`, `messages` and `secure`
/// are syslog, `access.log` and `error.log` below an `nginx`, `apache2` or
/// `httpd` folder are those servers' logs.
fn preset_for(path: &Path) -> Option<(Preset, &'static str)> {
    let name = path.file_name()?.to_str()?;
    let below = |folder: &str| {
        path.components()
            .any(|component| component.as_os_str() == folder)
    };
    let web = if below("nginx") {
        Some(("nginx", Preset::NginxAccess, Preset::NginxError))
    } else if below("apache2") || below("httpd") {
        Some(("apache", Preset::ApacheAccess, Preset::ApacheError))
    } else {
        None
    };
    if name.ends_with(".json") || name.ends_with(".ndjson") || name == EXAMPLE_LOG {
        Some((Preset::Json, "app"))
    } else if ["syslog", "messages"]
        .iter()
        .any(|log| name.starts_with(log))
    {
        Some((Preset::Syslog, "syslog"))
    } else if ["auth.log", "secure"]
        .iter()
        .any(|log| name.starts_with(log))
    {
        Some((Preset::AuthLog, "system.auth"))
    } else if let Some((server, access, error)) = web {
        if name.starts_with("access") {
            Some((
                access,
                if server == "nginx" {
                    "nginx.access"
                } else {
                    "apache.access"
                },
            ))
        } else if name.starts_with("error") {
            Some((
                error,
                if server == "nginx" {
                    "nginx.error"
                } else {
                    "apache.error"
                },
            ))
        } else {
            None
        }
    } else {
        None
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// Writes the shipped example `files` into `dir` (keeping any already there).
fn write_shipped(dir: &Path, files: &[(&str, &str)]) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in files {
        let path = dir.join(name);
        if !path.exists() {
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(dir.to_owned())
}

/// Prints one line per host metrics reading: load, memory, CPU busy share.
async fn print_host_metrics(
    mut console: Subscription,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut previous_cpu: Option<(u64, u64)> = None;
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            received = console.recv() => received?,
        };
        let Ok(batch) = MetricBatch::from_payload(&message.payload) else {
            continue;
        };
        if let Some(line) = host_metrics_line(&batch, &mut previous_cpu) {
            println!("{line}");
        }
    }
}

/// `metrics  web-1  load 0.42  memory available 61.0%  cpu busy 7.3%  (23 samples)`
/// for a host metrics batch; `None` for other batches.
pub(crate) fn host_metrics_line(
    batch: &MetricBatch,
    previous_cpu: &mut Option<(u64, u64)>,
) -> Option<String> {
    let gauge = |name: &str| {
        batch
            .samples
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| match s.value {
                Some(sample::Value::Gauge(value)) => Some(value),
                _ => None,
            })
    };
    let load = gauge("host.load.1m")?;
    let host = batch.resource.as_ref().map_or("", |r| r.host_name.as_str());
    let mut line = format!("metrics  {host}  load {load:.2}");
    if let (Some(available), Some(total)) = (
        gauge("host.memory.available_bytes"),
        gauge("host.memory.total_bytes"),
    ) && total > 0.0
    {
        line += &format!("  memory available {:.1}%", 100.0 * available / total);
    }
    let ticks = |busy: bool| -> u64 {
        batch
            .samples
            .iter()
            .filter(|s: &&Sample| s.name == "host.cpu.ticks")
            .filter(|s| {
                let mode = vigil_proto::labels::find(&s.labels, "mode").unwrap_or_default();
                busy != matches!(mode, "idle" | "iowait")
            })
            .filter_map(|s| match s.value {
                Some(sample::Value::Counter(value)) => Some(value),
                _ => None,
            })
            .sum()
    };
    let (busy, idle) = (ticks(true), ticks(false));
    if let Some((previous_busy, previous_idle)) = previous_cpu.replace((busy, idle)) {
        let busy_delta = busy.saturating_sub(previous_busy) as f64;
        let total_delta = busy_delta + idle.saturating_sub(previous_idle) as f64;
        if total_delta > 0.0 {
            line += &format!("  cpu busy {:.1}%", 100.0 * busy_delta / total_delta);
        }
    }
    line += &format!("  ({} samples)", batch.samples.len());
    Some(line)
}

/// An application log written by the all-in-one mode itself: steady INFO lines
/// and, every two minutes, a burst of ERROR lines that the shipped `ErrorBurst`
/// rule fires on (and resolves after).
#[derive(Debug)]
struct ExampleLog {
    file: std::fs::File,
}

impl ExampleLog {
    const LINE_EVERY: Duration = Duration::from_millis(500);
    const BURST_EVERY: u64 = 240;
    const BURST_AT: u64 = 10;

    fn create(path: &Path) -> anyhow::Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open the example log {}", path.display()))?;
        Ok(Self { file })
    }

    async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(Self::LINE_EVERY);
        for step in 0u64.. {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            let line = Self::line(step, unix_nanos(SystemTime::now()));
            writeln!(self.file, "{line}")?;
        }
        Ok(())
    }

    /// Line number `step`, a JSON object: an ERROR line for three steps of
    /// every burst period.
    fn line(step: u64, now_unix_nano: i64) -> String {
        let time = chrono::DateTime::from_timestamp_nanos(now_unix_nano)
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let in_period = step % Self::BURST_EVERY;
        if (Self::BURST_AT..Self::BURST_AT + 3).contains(&in_period) {
            format!(
                r#"{{"@timestamp":"{time}","level":"ERROR","message":"payment gateway timeout","service":"shop","order":{},"attempt":{}}}"#,
                1000 + step,
                in_period - Self::BURST_AT + 1
            )
        } else {
            let path = ["/api/orders", "/api/cart", "/health", "/api/users"][(step % 4) as usize];
            format!(
                r#"{{"@timestamp":"{time}","level":"INFO","message":"request served","service":"shop","path":"{path}","status":200,"duration_ms":{}}}"#,
                3 + step % 40
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::labels::label;
    use vigil_proto::v1::Resource;

    fn gauge(name: &str, value: f64) -> Sample {
        Sample {
            name: name.into(),
            value: Some(sample::Value::Gauge(value)),
            ..Sample::default()
        }
    }

    fn ticks(mode: &str, value: u64) -> Sample {
        Sample {
            name: "host.cpu.ticks".into(),
            labels: vec![label("mode", mode)],
            value: Some(sample::Value::Counter(value)),
            ..Sample::default()
        }
    }

    #[test]
    fn host_metric_lines_show_load_memory_and_cpu_from_tick_deltas() {
        let batch = |busy, idle| MetricBatch {
            resource: Some(Resource {
                host_name: "web-1".into(),
                ..Resource::default()
            }),
            samples: vec![
                gauge("host.load.1m", 0.5),
                gauge("host.memory.total_bytes", 1000.0),
                gauge("host.memory.available_bytes", 250.0),
                ticks("user", busy),
                ticks("idle", idle),
            ],
            producer: String::new(),
        };
        let mut previous = None;
        assert_eq!(
            host_metrics_line(&batch(100, 900), &mut previous).unwrap(),
            "metrics  web-1  load 0.50  memory available 25.0%  (5 samples)"
        );
        assert_eq!(
            host_metrics_line(&batch(130, 970), &mut previous).unwrap(),
            "metrics  web-1  load 0.50  memory available 25.0%  cpu busy 30.0%  (5 samples)"
        );
        let not_host = MetricBatch {
            samples: vec![gauge("if.speed", 1.0)],
            ..batch(0, 0)
        };
        assert!(host_metrics_line(&not_host, &mut previous).is_none());
    }

    #[test]
    fn the_example_log_bursts_errors_for_the_shipped_rule() {
        let errors = (0..ExampleLog::BURST_EVERY)
            .filter(|step| ExampleLog::line(*step, 0).contains(r#""level":"ERROR""#))
            .count();
        assert_eq!(errors, 3);
        assert!(ExampleLog::line(ExampleLog::BURST_AT, 0).contains("payment gateway timeout"));
        assert!(ExampleLog::line(0, 0).starts_with(
            r#"{"@timestamp":"1970-01-01T00:00:00.000Z","level":"INFO","message":"request served""#
        ));
    }

    #[test]
    fn log_files_get_the_preset_their_name_suggests() {
        let preset = |path: &str| preset_for(Path::new(path));
        assert_eq!(preset("/var/log/syslog"), Some((Preset::Syslog, "syslog")));
        assert_eq!(
            preset("/var/log/auth.log.1"),
            Some((Preset::AuthLog, "system.auth"))
        );
        assert_eq!(
            preset("/var/log/nginx/access.log"),
            Some((Preset::NginxAccess, "nginx.access"))
        );
        assert_eq!(
            preset("/var/log/apache2/error.log"),
            Some((Preset::ApacheError, "apache.error"))
        );
        assert_eq!(preset("/srv/app/events.json"), Some((Preset::Json, "app")));
        assert_eq!(preset("/srv/app/access.log"), None);
        assert_eq!(preset("/srv/app/app.log"), None);
        let example = log_entry(Path::new("/tmp/vigil-data/example/app.json"));
        assert_eq!(
            example.parsers.steps,
            [ParserStep::Preset(Preset::Json)],
            "the default entry reads the example log through the json preset"
        );
    }
}
