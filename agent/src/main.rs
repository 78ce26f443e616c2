//! The `vigil-agent` binary: loads the configuration, connects to Kafka, serves the
//! HTTP endpoints and runs the agent until SIGTERM or SIGINT.

use anyhow::Context;
use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use vigil_agent::config::MetricSet;
use vigil_agent::{Agent, AgentConfig};
use vigil_config::duration::format_duration;
use vigil_runtime::Bus;
use vigil_runtime::telemetry::{LogFormat, ProcessContext, init_tracing};

/// Vigil's host daemon: tails log files, reads host metrics from /proc and polls
/// devices over SNMP, and ships everything as protobuf batches to Kafka.
///
/// Log lines are checkpointed in `data_dir` only once Kafka acknowledged them, so
/// a restart neither loses nor repeats lines. Stop it with SIGTERM: it stops
/// reading, waits for in-flight batches and writes its last checkpoint.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// The agent's YAML configuration file.
    #[arg(long, env = "VIGIL_AGENT_CONFIG", value_name = "FILE")]
    config: PathBuf,

    /// Validate the configuration, print a summary and exit: 0 if valid, 1 with
    /// the error otherwise.
    #[arg(long)]
    check_config: bool,

    /// Format of the agent's own logs on stderr (the filter comes from VIGIL_LOG,
    /// e.g. `info,vigil_agent=debug`).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    log_format: Format,

    /// Where batches go. `discard` acknowledges every batch at once and drops it
    /// without connecting to Kafka: for benchmarks (it measures the tail-only cost
    /// of reading, batching and encoding) and dry runs. Checkpoints still advance,
    /// so use a scratch `data_dir` with it.
    #[arg(long, value_enum, default_value_t = Output::Kafka)]
    output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// The Kafka cluster of the configuration's `kafka` section.
    Kafka,
    /// Nowhere: every batch is acknowledged and dropped.
    Discard,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.check_config {
        return match load(&args) {
            Ok((config, _)) => {
                for warning in config.warnings() {
                    eprintln!("warning: {}: {warning}", args.config.display());
                }
                print!("{}", summary(&args, &config));
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    init_tracing(match args.log_format {
        Format::Text => LogFormat::Text,
        Format::Json => LogFormat::Json,
    });
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: the async runtime could not start: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the agent until SIGTERM or SIGINT.
async fn run(args: &Args) -> anyhow::Result<()> {
    let (config, kafka) = load(args)?;
    for warning in config.warnings() {
        tracing::warn!(config = %args.config.display(), "{warning}");
    }
    let context = ProcessContext::start(config.http.listen)
        .await
        .context("`http.listen`")?;
    let bus = match args.output {
        Output::Kafka => Bus::Kafka(Box::new(kafka)),
        Output::Discard => Bus::Discard,
    };
    let agent = Agent::new(config, bus, context.metrics, context.health);
    agent.run(context.shutdown).await?;
    Ok(())
}

/// The validated configuration and its Kafka settings, which standalone mode needs.
fn load(args: &Args) -> anyhow::Result<(AgentConfig, vigil_runtime::kafka::KafkaSettings)> {
    let config = AgentConfig::load(&args.config)?;
    let kafka = config.kafka.clone().with_context(|| {
        format!(
            "{}: `kafka` is not set; the standalone agent ships to Kafka (without Kafka, run vigil-all-in-one)",
            args.config.display()
        )
    })?;
    Ok((config, kafka))
}

/// What the configuration makes the agent do, without secrets.
fn summary(args: &Args, config: &AgentConfig) -> String {
    let mut text = format!("{}: valid\n", args.config.display());
    let resource = &config.resource;
    text += &format!("resource: {} (host {})\n", resource.id, resource.host_name);
    if let Some(kafka) = &config.kafka {
        let topics = kafka.topics();
        text += &format!(
            "kafka: {} -> {}, {}\n",
            kafka.brokers,
            topics.logs_raw(),
            topics.metrics_raw()
        );
    }
    text += &format!("data_dir: {}\n", config.data_dir.display());
    text += &format!("http: {}\n", config.http.listen);
    text += &format!("logs: {} file(s)\n", config.logs.len());
    for log in &config.logs {
        text += &format!("  {} (dataset {})\n", log.path.display(), log.dataset);
    }
    let host = &config.host_metrics;
    if host.enabled {
        text += &format!(
            "host metrics: every {} from {}\n",
            format_duration(host.interval),
            host.proc_root.display()
        );
    } else {
        text += "host metrics: off\n";
    }
    text += &format!("snmp: {} target(s)\n", config.snmp.targets.len());
    for (name, credential) in &config.snmp.credentials {
        let networks = credential.allowed_networks.as_ref().map_or_else(
            || "any address".to_owned(),
            |networks| {
                let networks: Vec<String> = networks.iter().map(ToString::to_string).collect();
                networks.join(", ")
            },
        );
        text += &format!(
            "  credential {name} ({}) may be sent to {networks}\n",
            credential.version
        );
    }
    if let Some(etcd) = &config.snmp.etcd {
        text += &format!(
            "snmp: targets from etcd {} under {}\n",
            etcd.endpoints.join(","),
            etcd.key_prefix("snmp")
        );
    }
    for target in &config.snmp.targets {
        let sets: Vec<&str> = target.metric_sets.iter().map(MetricSet::name).collect();
        let credential = match &target.credential {
            Some(name) => format!("credential {name}"),
            None => target.version.unwrap_or_default().to_string(),
        };
        text += &format!(
            "  {} at {} ({credential}, every {}, sets {})\n",
            target.name,
            target.address,
            format_duration(target.interval),
            sets.join(", ")
        );
    }
    text
}
