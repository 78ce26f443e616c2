//! `vigil-aggregator`: the stream stages (`derive`, `alert`, `index`), `setup` of
//! Elasticsearch and Kibana, the rules CLI (`rules check|test|push`), the
//! definitions CLI (`definitions check|push`),
//! and the silences CLI (`silences add|list|expire`). Thin: parse arguments, load
//! configuration, build the stage, run it until SIGTERM. (The all-in-one mode is
//! `vigil-all-in-one`.)

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use vigil_aggregator::alert::AlertStage;
use vigil_aggregator::alert::notify::{Matcher, Silence, SilenceStore, SilenceWatch};
use vigil_aggregator::config::{AggregatorConfig, StageName};
use vigil_aggregator::derive::DeriveStage;
use vigil_aggregator::derive::definitions::DefinitionSet;
use vigil_aggregator::rule_source::{self, RuleFiles, RuleSource, Section};
use vigil_runtime::Bus;
use vigil_runtime::etcd::EtcdSettings;
use vigil_runtime::telemetry::{LogFormat, ProcessContext, run_main};

/// Vigil's stream processors: derive rates, KPIs and aggregates, evaluate alert
/// rules, index everything into Elasticsearch, manage rules, definitions and
/// silences.
#[derive(Debug, Parser)]
#[command(name = "vigil-aggregator", version, propagate_version = true)]
struct Cli {
    /// Log output format.
    #[arg(
        long,
        value_enum,
        default_value = "text",
        global = true,
        env = "VIGIL_LOG_FORMAT"
    )]
    log_format: LogFormatArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compute rates, KPIs and windowed aggregates from raw metrics in Kafka.
    Derive(StageArgs),
    /// Evaluate alert rules over metrics and logs from Kafka and notify pagers.
    Alert(StageArgs),
    /// Write logs, metrics and alerts from Kafka into Elasticsearch.
    Index(StageArgs),
    /// Install what Elasticsearch and Kibana need before indexing: lifecycle
    /// policies, component and index templates, data streams, and the dashboards.
    /// Safe to run again: what is already installed is left unchanged.
    Setup(SetupArgs),
    /// Check, test and publish rule files.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Check and publish derive definition files.
    #[command(subcommand)]
    Definitions(DefinitionsCommand),
    /// Add, list and expire silences: alerts they match are not notified.
    #[command(subcommand)]
    Silences(SilencesCommand),
}

#[derive(Debug, Subcommand)]
enum SilencesCommand {
    /// Silence the alerts that match every `--matcher`; prints the silence's id.
    Add {
        /// `name=value`, `name!=value`, `name=~regex` or `name!~regex` (repeatable;
        /// regexes are anchored).
        #[arg(long = "matcher", required = true)]
        matchers: Vec<Matcher>,
        /// How long it lasts, e.g. `2h` or `1d`.
        #[arg(long, value_parser = vigil_rules::parse_duration)]
        duration: std::time::Duration,
        /// When it starts (RFC 3339, e.g. `2025-03-01T22:00:00Z`); now by default.
        #[arg(long, value_parser = parse_time)]
        start: Option<chrono::DateTime<chrono::Utc>>,
        /// Who silences, for the record.
        #[arg(long, env = "USER")]
        author: String,
        /// Why.
        #[arg(long, default_value = "")]
        comment: String,
        #[command(flatten)]
        etcd: EtcdArgs,
    },
    /// List the silences (pending, active and recently expired), latest first.
    List {
        #[command(flatten)]
        etcd: EtcdArgs,
    },
    /// End a silence now.
    Expire {
        /// The id `silences add` printed.
        id: String,
        #[command(flatten)]
        etcd: EtcdArgs,
    },
}

fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&chrono::Utc))
        .map_err(|error| format!("not an RFC 3339 time: {error}"))
}

#[derive(Debug, Subcommand)]
enum DefinitionsCommand {
    /// Validate every definition file in a folder (on top of the built-ins); errors
    /// name file, line, column and field.
    Check {
        /// Folder of definition files.
        dir: PathBuf,
    },
    /// Check a folder of definitions and, if valid, replace the definitions in
    /// etcd with it.
    Push {
        /// Folder of definition files.
        dir: PathBuf,
        #[command(flatten)]
        etcd: EtcdArgs,
    },
}

#[derive(Debug, Args)]
struct EtcdArgs {
    /// etcd client URL.
    #[arg(
        long,
        env = "VIGIL_ETCD_ENDPOINT",
        default_value = "http://127.0.0.1:2379"
    )]
    etcd_endpoint: String,
    /// Key prefix of this deployment; files go under `<prefix>/rules/` or `<prefix>/derive/`.
    #[arg(long, env = "VIGIL_ETCD_PREFIX", default_value = "/vigil")]
    etcd_prefix: String,
}

#[derive(Debug, Args)]
struct StageArgs {
    /// Configuration file.
    #[arg(long, env = "VIGIL_AGGREGATOR_CONFIG")]
    config: PathBuf,
    /// Validate the configuration, print a summary and exit.
    #[arg(long)]
    check_config: bool,
}

#[derive(Debug, Args)]
struct SetupArgs {
    /// Aggregator configuration: Elasticsearch and Kibana (`index.elasticsearch`,
    /// `index.kibana`) and the index names.
    #[arg(long, env = "VIGIL_AGGREGATOR_CONFIG")]
    config: Option<PathBuf>,
    /// Elasticsearch URL, instead of the configuration's (no credentials).
    #[arg(long)]
    elasticsearch_url: Option<String>,
    /// Kibana URL, instead of the configuration's `index.kibana.url`.
    #[arg(long)]
    kibana_url: Option<String>,
    /// Kibana space to import the saved objects into.
    #[arg(long)]
    kibana_space: Option<String>,
    /// Leave Kibana out even when it is configured.
    #[arg(long, conflicts_with = "kibana_url")]
    skip_kibana: bool,
    /// On a server without lifecycle policies or data streams, install the rest
    /// without them (and say which were skipped) instead of failing.
    #[arg(long)]
    skip_unsupported: bool,
    /// A `dashboards/` folder to install instead of the files built into this
    /// binary.
    #[arg(long)]
    dashboards: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// Validate every rule file in a folder; errors name file, line and column.
    Check {
        /// Folder of rule files.
        dir: PathBuf,
    },
    /// Run the rule unit tests (`*.test.yaml`) in a folder.
    Test {
        /// Folder of rule files and their tests.
        dir: PathBuf,
    },
    /// Check a folder of rules and, if valid, replace the rules in etcd with it in
    /// one transaction (files deleted from the folder are deleted from etcd),
    /// printing what changed.
    Push {
        /// Folder of rule files.
        dir: PathBuf,
        #[command(flatten)]
        etcd: EtcdArgs,
    },
    /// Show how the rules in etcd differ from a folder, without changing
    /// anything; exits 1 when they differ.
    Diff {
        /// Folder of rule files.
        dir: PathBuf,
        #[command(flatten)]
        etcd: EtcdArgs,
    },
    /// Write the rules in etcd into a folder (created if missing), replacing
    /// files of the same name.
    Pull {
        /// Folder to write the rule files into.
        dir: PathBuf,
        #[command(flatten)]
        etcd: EtcdArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match cli.log_format {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    };
    run_main(format, run(cli.command))
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Alert(args) => {
            let Some(config) = load_stage_config(&args)? else {
                return Ok(ExitCode::SUCCESS);
            };
            let source = match (&config.alert.rules_dir, &config.etcd) {
                (Some(dir), _) => RuleSource::Folder(dir.clone()),
                (None, Some(etcd)) => RuleSource::Etcd(etcd.clone(), Section::Rules),
                (None, None) => anyhow::bail!(
                    "{}: the alert stage needs `etcd` or `alert.rules_dir`",
                    args.config.display()
                ),
            };
            let bus = Bus::Kafka(Box::new(config.kafka.clone()));
            let context = start_process(&args, &config, StageName::Alert, &bus).await?;
            tracing::info!(rules = %source.describe(), "alert stage starting");
            let rules = source.watch(context.shutdown.clone())?;
            let mut stage_config = config.alert.stage_config();
            stage_config.silences = config
                .etcd
                .as_ref()
                .map(|etcd| SilenceWatch::etcd(etcd, context.shutdown.clone()));
            let stage = AlertStage::new(&bus, rules, stage_config, &context.metrics)?;
            context.health.set_ready(true);
            stage.run(context.shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Derive(args) => {
            let Some(config) = load_stage_config(&args)? else {
                return Ok(ExitCode::SUCCESS);
            };
            let source = match (&config.derive.definitions_dir, &config.etcd) {
                (Some(dir), _) => RuleSource::Folder(dir.clone()),
                (None, Some(etcd)) => RuleSource::Etcd(etcd.clone(), Section::Derive),
                (None, None) => anyhow::bail!(
                    "{}: the derive stage needs `etcd` or `derive.definitions_dir`",
                    args.config.display()
                ),
            };
            let bus = Bus::Kafka(Box::new(config.kafka.clone()));
            let context = start_process(&args, &config, StageName::Derive, &bus).await?;
            tracing::info!(definitions = %source.describe(), "derive stage starting");
            let definitions = source.watch(context.shutdown.clone())?;
            let stage = DeriveStage::new(
                &bus,
                definitions,
                config.derive.stage_config(),
                &context.metrics,
            )?;
            context.health.set_ready(true);
            stage.run(context.shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Index(args) => {
            let Some(config) = load_stage_config(&args)? else {
                return Ok(ExitCode::SUCCESS);
            };
            let bus = Bus::Kafka(Box::new(config.kafka.clone()));
            let context = start_process(&args, &config, StageName::Index, &bus).await?;
            let stage = config
                .index_section()
                .map_err(anyhow::Error::from)
                .and_then(|section| {
                    section.bulk_client()?.watch_connection(
                        context.health.connection("elasticsearch"),
                        context.shutdown.clone(),
                    );
                    Ok(section.stage(&bus, &context.metrics)?)
                })
                .with_context(|| args.config.display().to_string())?;
            context.health.set_ready(true);
            stage.run(context.shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Setup(args) => run_setup(args).await,
        Command::Rules(command) => run_rules_command(command).await,
        Command::Silences(command) => run_silences_command(command).await,
        Command::Definitions(command) => run_definitions_command(command).await,
    }
}

/// Serves the endpoints of `stage` on its address and keeps its `/ready` saying
/// whether Kafka answers.
async fn start_process(
    args: &StageArgs,
    config: &AggregatorConfig,
    stage: StageName,
    bus: &Bus,
) -> anyhow::Result<ProcessContext> {
    let context = ProcessContext::start(config.listen(stage))
        .await
        .with_context(|| {
            format!(
                "{}: `{}`",
                args.config.display(),
                config.listen_field(stage)
            )
        })?;
    bus.watch_connection(
        context.health.connection("kafka"),
        &bus.topics().metrics_raw(),
        context.shutdown.clone(),
    )?;
    Ok(context)
}

/// Loads the stage configuration; `None` when only a check was asked for.
fn load_stage_config(args: &StageArgs) -> anyhow::Result<Option<AggregatorConfig>> {
    let config = AggregatorConfig::load(&args.config)?;
    for warning in config.warnings() {
        if args.check_config {
            eprintln!("warning: {}: {warning}", args.config.display());
        } else {
            tracing::warn!(config = %args.config.display(), "{warning}");
        }
    }
    if args.check_config {
        println!(
            "{}: ok (kafka {}, topics {}.*, etcd {}, index {})",
            args.config.display(),
            config.kafka.brokers,
            config.kafka.topic_prefix,
            config
                .etcd
                .as_ref()
                .map_or("not configured".to_owned(), |e| e.endpoints.join(",")),
            config
                .index
                .as_ref()
                .map_or("not configured".to_owned(), |i| i.elasticsearch.url.clone()),
        );
        return Ok(None);
    }
    Ok(Some(config))
}

async fn run_setup(args: SetupArgs) -> anyhow::Result<ExitCode> {
    use vigil_aggregator::index::kibana::{KibanaClient, KibanaConfig};
    use vigil_aggregator::index::setup::{self, Dashboards, SetupTargets};
    use vigil_aggregator::index::{BulkClient, BulkClientConfig, ElasticsearchAuth, IndexNames};

    let config = args
        .config
        .as_deref()
        .map(AggregatorConfig::load)
        .transpose()?;
    let section = config.as_ref().and_then(|config| config.index.as_ref());
    let elasticsearch = match (&args.elasticsearch_url, section) {
        (Some(url), _) => BulkClient::new(BulkClientConfig::new(url))
            .map_err(|error| anyhow::anyhow!("--elasticsearch-url: {error}"))?,
        (None, Some(section)) => section.bulk_client()?,
        (None, None) => anyhow::bail!(
            "setup needs Elasticsearch: `--config` with an `index` section, or `--elasticsearch-url`"
        ),
    };
    let names = match section {
        Some(section) => section.index_names(),
        None => IndexNames::default(),
    };
    names.validate()?;
    let mut kibana = match section {
        Some(section) => section.kibana(),
        None => None,
    };
    if let Some(url) = args.kibana_url {
        kibana = Some(KibanaConfig {
            url,
            ..kibana.unwrap_or(KibanaConfig {
                url: String::new(),
                auth: ElasticsearchAuth::None,
                ca_file: None,
                space: None,
            })
        });
    }
    if let (Some(kibana), Some(space)) = (&mut kibana, args.kibana_space) {
        kibana.space = Some(space);
    }
    if args.skip_kibana {
        kibana = None;
    }
    let kibana = kibana
        .map(|kibana| KibanaClient::new(&kibana))
        .transpose()
        .context("Kibana")?;
    let dashboards = match &args.dashboards {
        Some(dir) => Dashboards::from_dir(dir)?,
        None => Dashboards::shipped(),
    }
    .for_indices(&names);
    let targets = SetupTargets {
        elasticsearch: elasticsearch.endpoint(),
        kibana: kibana.as_ref(),
        skip_unsupported: args.skip_unsupported,
    };
    setup::install(&targets, &dashboards, &mut std::io::stdout().lock())
        .await
        .context("setup failed")?;
    Ok(ExitCode::SUCCESS)
}

async fn run_rules_command(command: RulesCommand) -> anyhow::Result<ExitCode> {
    match command {
        RulesCommand::Check { dir } => {
            Ok(report_rules_check(&dir).map_or(ExitCode::FAILURE, |_| ExitCode::SUCCESS))
        }
        RulesCommand::Test { dir } => {
            let report = vigil_rules::run_rule_tests(&dir)?;
            println!("{report}");
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        RulesCommand::Push { dir, etcd } => {
            let Some(files) = report_rules_check(&dir) else {
                eprintln!("nothing pushed: fix the errors above first");
                return Ok(ExitCode::FAILURE);
            };
            push(&etcd, Section::Rules, &files).await
        }
        RulesCommand::Diff { dir, etcd } => {
            let files = rule_source::read_folder(&dir)
                .map_err(|error| anyhow::anyhow!("reading {}: {error}", dir.display()))?;
            let current =
                rule_source::read_from_etcd(&etcd_settings(&etcd)?, Section::Rules).await?;
            let changes = rule_source::compare(&current, &files);
            for change in &changes {
                print!("{}", change.diff());
            }
            if changes.is_empty() {
                println!("{}: same as etcd", dir.display());
                return Ok(ExitCode::SUCCESS);
            }
            Ok(ExitCode::FAILURE)
        }
        RulesCommand::Pull { dir, etcd } => {
            let files = rule_source::read_from_etcd(&etcd_settings(&etcd)?, Section::Rules).await?;
            std::fs::create_dir_all(&dir)
                .map_err(|error| anyhow::anyhow!("creating {}: {error}", dir.display()))?;
            for (name, text) in &files {
                let path = dir.join(name);
                std::fs::write(&path, text)
                    .map_err(|error| anyhow::anyhow!("writing {}: {error}", path.display()))?;
                println!("wrote {}", path.display());
            }
            if files.is_empty() {
                println!("no rules in etcd");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn run_definitions_command(command: DefinitionsCommand) -> anyhow::Result<ExitCode> {
    let check = |dir: &Path| {
        report_check(dir, DefinitionSet::from_files, |set| {
            format!("{} definitions with the built-ins", set.len())
        })
    };
    match command {
        DefinitionsCommand::Check { dir } => {
            Ok(check(&dir).map_or(ExitCode::FAILURE, |_| ExitCode::SUCCESS))
        }
        DefinitionsCommand::Push { dir, etcd } => {
            let Some(files) = check(&dir) else {
                eprintln!("nothing pushed: fix the errors above first");
                return Ok(ExitCode::FAILURE);
            };
            push(&etcd, Section::Derive, &files).await
        }
    }
}

async fn run_silences_command(command: SilencesCommand) -> anyhow::Result<ExitCode> {
    let store = |etcd: &EtcdArgs| -> anyhow::Result<SilenceStore> {
        let settings = EtcdSettings::new(etcd.etcd_endpoint.clone(), etcd.etcd_prefix.clone());
        settings.validate()?;
        Ok(SilenceStore::new(settings))
    };
    let now = chrono::Utc::now();
    match command {
        SilencesCommand::Add {
            matchers,
            duration,
            start,
            author,
            comment,
            etcd,
        } => {
            let silence = Silence::new(matchers, start.unwrap_or(now), duration, author, comment)
                .map_err(anyhow::Error::msg)?;
            store(&etcd)?.put(&silence, now).await?;
            println!("{}", silence.id);
        }
        SilencesCommand::List { etcd } => {
            for silence in store(&etcd)?.list().await? {
                let matchers: Vec<String> =
                    silence.matchers.iter().map(Matcher::to_string).collect();
                let time = |t: chrono::DateTime<chrono::Utc>| {
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                };
                println!(
                    "{}  {:<8} {} .. {}  {}  {}  {}",
                    silence.id,
                    silence.state(now).as_str(),
                    time(silence.starts_at),
                    time(silence.ends_at),
                    silence.created_by,
                    matchers.join(","),
                    silence.comment
                );
            }
        }
        SilencesCommand::Expire { id, etcd } => {
            store(&etcd)?.expire(&id, now).await?;
            println!("expired {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Replaces the files of `section` in etcd and says what changed.
fn etcd_settings(etcd: &EtcdArgs) -> anyhow::Result<EtcdSettings> {
    let settings = EtcdSettings::new(etcd.etcd_endpoint.clone(), etcd.etcd_prefix.clone());
    settings.validate()?;
    Ok(settings)
}

async fn push(etcd: &EtcdArgs, section: Section, files: &RuleFiles) -> anyhow::Result<ExitCode> {
    let settings = etcd_settings(etcd)?;
    let changes = rule_source::push_to_etcd(&settings, section, files).await?;
    let prefix = settings.key_prefix(section.key());
    for change in &changes {
        print!("{}", change.diff());
        println!("{:<7} {prefix}{}", change.kind(), change.name);
    }
    if changes.is_empty() {
        println!("{prefix}: already up to date");
    }
    Ok(ExitCode::SUCCESS)
}

fn report_rules_check(dir: &Path) -> Option<RuleFiles> {
    report_check(dir, vigil_rules::RuleSet::from_files, |rules| {
        format!("{} rules", rules.rule_count())
    })
}

/// Prints the outcome of validating the files of `dir`; the files when valid.
fn report_check<T>(
    dir: &Path,
    validate: impl FnOnce(&RuleFiles) -> Result<T, Vec<vigil_rules::RuleError>>,
    summary: impl FnOnce(&T) -> String,
) -> Option<RuleFiles> {
    match rule_source::check_folder(dir, validate) {
        Ok((files, valid)) => {
            println!(
                "{}: ok ({} files, {})",
                dir.display(),
                files.len(),
                summary(&valid)
            );
            Some(files)
        }
        Err(errors) => {
            for error in &errors {
                eprintln!("{error}");
            }
            eprintln!("{}: {} error(s)", dir.display(), errors.len());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silences_add_takes_repeated_matchers_a_duration_and_an_author() {
        let cli = Cli::try_parse_from([
            "vigil-aggregator",
            "silences",
            "add",
            "--matcher",
            "alertname=HostDown",
            "--matcher",
            "host=~web.*",
            "--duration",
            "2h",
            "--author",
            "alice",
            "--comment",
            "disk swap",
            "--etcd-prefix",
            "/lab",
        ])
        .unwrap();
        let Command::Silences(SilencesCommand::Add {
            matchers,
            duration,
            start,
            author,
            comment,
            etcd,
        }) = cli.command
        else {
            panic!("not silences add");
        };
        let matchers: Vec<String> = matchers.iter().map(Matcher::to_string).collect();
        assert_eq!(matchers, [r#"alertname="HostDown""#, r#"host=~"web.*""#]);
        assert_eq!(duration, std::time::Duration::from_secs(7200));
        assert_eq!(
            (start, author.as_str(), comment.as_str()),
            (None, "alice", "disk swap")
        );
        assert_eq!(etcd.etcd_prefix, "/lab");
    }

    #[test]
    fn a_malformed_matcher_is_refused_with_the_reason() {
        let error = Cli::try_parse_from([
            "vigil-aggregator",
            "silences",
            "add",
            "--matcher",
            "HostDown",
            "--duration",
            "2h",
            "--author",
            "alice",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains(
                "invalid matcher `HostDown`: expected `=`, `!=`, `=~` or `!~` after the label name"
            ),
            "{error}"
        );
    }
}
