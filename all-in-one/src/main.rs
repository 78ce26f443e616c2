//! `vigil-all-in-one`: Vigil on one host in one process, for a first look and for
//! development. The agent's sources feed the derive, alert and index stages over an
//! in-process bus, with no Kafka, etcd or Elasticsearch; rules and derive
//! definitions come from watched folders, documents go to NDJSON files, alerts are
//! printed. Thin: parse arguments, start the HTTP endpoints, run the pipeline until
//! SIGTERM or Ctrl-C.

mod pipeline;

use clap::Parser;
use pipeline::AllInOneOptions;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use vigil_runtime::telemetry::{LogFormat, ProcessContext, run_main};

/// Run Vigil on this host in one process: tail logs, read host metrics, derive
/// rates and KPIs, evaluate alert rules and write every document to NDJSON files,
/// with no Kafka, etcd or Elasticsearch.
#[derive(Debug, Parser)]
#[command(name = "vigil-all-in-one", version)]
struct Cli {
    /// Where checkpoints and NDJSON documents are written.
    #[arg(long, default_value = "vigil-data")]
    data_dir: PathBuf,
    /// Folder of rule files, watched for changes (the shipped examples are used if it does not exist).
    #[arg(long, default_value = "rules")]
    rules: PathBuf,
    /// Folder of derive definitions, watched for changes (the shipped examples are used if it does not exist).
    #[arg(long, default_value = "derive")]
    definitions: PathBuf,
    /// Log file to tail (repeatable); without any, an example log is written and tailed.
    #[arg(long = "log-file")]
    log_files: Vec<PathBuf>,
    /// Address of `/metrics`, `/health` and `/ready`.
    #[arg(long, default_value = "127.0.0.1:9464")]
    http: std::net::SocketAddr,
    /// Seconds between host metric readings.
    #[arg(long, default_value_t = 5)]
    host_interval: u64,
    /// Log output format.
    #[arg(long, value_enum, default_value = "text", env = "VIGIL_LOG_FORMAT")]
    log_format: LogFormatArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match cli.log_format {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    };
    run_main(format, async { run(cli).await.map(|()| ExitCode::SUCCESS) })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let context = ProcessContext::start(cli.http).await?;
    let options = AllInOneOptions {
        data_dir: cli.data_dir,
        rules_dir: cli.rules,
        definitions_dir: cli.definitions,
        log_files: cli.log_files,
        host_interval: Duration::from_secs(cli.host_interval.max(1)),
    };
    pipeline::run(options, context.metrics, context.health, context.shutdown).await
}
