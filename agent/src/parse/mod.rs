//! Log lines parsed at the source, in the tailer, between reading a line and
//! encoding it into its batch: each `logs[]` entry may name a chain of parser
//! steps (`json`, `logfmt`, `regex`, `syslog`, `cri`, `docker`, `timestamp`,
//! `level`) or a preset. The line's own time becomes its event time, and what
//! the steps find becomes its fields, under Elastic Common Schema names where
//! one exists. The message stays the line as read, except where a step says
//! otherwise (a container runtime's envelope, a JSON `message_field`).
//!
//! A line a step cannot parse ships all the same: as the steps before left it,
//! with the field `log.parse_failure` naming the step, counted in
//! `vigil_agent_log_parse_failures_total{dataset,parser}` and logged at most
//! once a minute per file. An entry without parsers costs nothing per line.

mod captures;
mod config;
mod container;
mod fields;
mod json;
mod kubernetes;
mod logfmt;
mod presets;
mod syslog;
mod timestamp;

pub use config::{
    EmptyStep, JsonStep, LevelStep, ParserStep, ParsersConfig, RegexStep, SyslogStep, TimestampStep,
};
pub(crate) use fields::Fields;
pub use presets::Preset;

use crate::tailer::wire::WireLine;
use captures::{Pattern, RegexParser};
use jiff::tz::TimeZone;
use prometheus_client::metrics::counter::Counter;
use std::sync::Arc;
use std::time::{Duration, Instant};
use timestamp::Layout;

/// The field that flags a line a step could not parse; its value names the step.
pub(crate) const PARSE_FAILURE_FIELD: &str = "log.parse_failure";

/// How often the parse failures of one file are logged, at most.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// A `parsers` setting that cannot be used: the field under `parsers` and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidParsers {
    /// Path below `parsers`, such as `[1].regex.patterns[0]`.
    pub field: String,
    pub problem: String,
}

/// One compiled step.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    Json {
        message_field: Option<String>,
    },
    Logfmt,
    Regex(RegexParser),
    Syslog {
        zone: TimeZone,
    },
    Cri,
    Docker,
    /// CRI or Docker's json-file, by the line's first character.
    Container,
    /// The pod and container of a Kubernetes container log, from its path.
    Kubernetes,
    Timestamp(TimestampParser),
    Level(LevelParser),
}

impl Step {
    fn name(&self) -> &'static str {
        match self {
            Step::Json { .. } => "json",
            Step::Logfmt => "logfmt",
            Step::Regex(_) => "regex",
            Step::Syslog { .. } => "syslog",
            Step::Cri => "cri",
            Step::Docker => "docker",
            Step::Container => "container",
            Step::Kubernetes => "kubernetes",
            Step::Timestamp(_) => "timestamp",
            Step::Level(_) => "level",
        }
    }
}

/// The event time from the first of `fields` a line has.
#[derive(Debug, Clone)]
pub(crate) struct TimestampParser {
    fields: Vec<String>,
    layouts: Vec<Layout>,
    zone: TimeZone,
}

impl TimestampParser {
    fn preset(fields: &[&str], layout: &str) -> Self {
        Self {
            fields: fields.iter().map(|field| (*field).to_owned()).collect(),
            layouts: vec![Layout::Strftime(layout.to_owned())],
            zone: TimeZone::system(),
        }
    }
}

/// `log.level` from a field, through a map of values compared without case.
#[derive(Debug, Clone)]
pub(crate) struct LevelParser {
    field: String,
    map: Vec<(String, String)>,
}

impl Default for LevelParser {
    fn default() -> Self {
        Self {
            field: "log.level".to_owned(),
            map: Vec::new(),
        }
    }
}

impl LevelParser {
    fn apply(&self, fields: &mut Fields) {
        let Some(value) = fields.get(&self.field) else {
            return;
        };
        let level = match self
            .map
            .iter()
            .find(|(from, _)| from.eq_ignore_ascii_case(value))
        {
            Some((_, to)) => to.clone(),
            None => value.to_lowercase(),
        };
        fields.add_verbatim("log.level", &level);
    }
}

/// The compiled `parsers` of one `logs[]` entry, shared by the files it follows.
#[derive(Debug)]
pub(crate) struct Chain {
    steps: Vec<Step>,
    /// `agent_log_parse_failures_total{dataset,parser}` of each step.
    failures: Vec<Counter>,
}

impl Chain {
    /// The chain `config` describes; `None` when it has no steps.
    pub(crate) fn new(
        config: &ParsersConfig,
        dataset: &str,
        metrics: &crate::self_metrics::AgentMetrics,
    ) -> Option<Arc<Self>> {
        let steps = compile(config).ok()?;
        if steps.is_empty() {
            return None;
        }
        let failures = steps
            .iter()
            .map(|step| metrics.log_parse_failure(dataset, step.name()))
            .collect();
        Some(Arc::new(Self { steps, failures }))
    }
}

/// Compiles the steps of `config`, presets expanded.
pub fn validate(config: &ParsersConfig) -> Result<(), InvalidParsers> {
    compile(config).map(drop)
}

fn compile(config: &ParsersConfig) -> Result<Vec<Step>, InvalidParsers> {
    let mut steps = Vec::new();
    for (index, step) in config.steps.iter().enumerate() {
        let invalid = |key: &str, problem: String| InvalidParsers {
            field: format!("[{index}].{key}"),
            problem,
        };
        match step {
            ParserStep::Preset(preset) => steps.extend(preset.steps()),
            ParserStep::Json(json) => steps.push(Step::Json {
                message_field: json.message_field.clone(),
            }),
            ParserStep::Logfmt(_) => steps.push(Step::Logfmt),
            ParserStep::Cri(_) | ParserStep::Docker(_) | ParserStep::Container(_) if index > 0 => {
                return Err(invalid(
                    match step {
                        ParserStep::Cri(_) => "cri",
                        ParserStep::Docker(_) => "docker",
                        _ => "container",
                    },
                    "must be the first step: it reads the line as the container runtime wrote it"
                        .to_owned(),
                ));
            }
            ParserStep::Cri(_) => steps.push(Step::Cri),
            ParserStep::Docker(_) => steps.push(Step::Docker),
            ParserStep::Container(_) => steps.push(Step::Container),
            ParserStep::Kubernetes(_) => steps.push(Step::Kubernetes),
            ParserStep::Regex(regex) => {
                if regex.patterns.is_empty() {
                    return Err(invalid(
                        "regex.patterns",
                        "must hold at least one regex".to_owned(),
                    ));
                }
                let patterns = regex
                    .patterns
                    .iter()
                    .enumerate()
                    .map(|(position, pattern)| {
                        Pattern::new(pattern).map_err(|problem| {
                            invalid(&format!("regex.patterns[{position}]"), problem)
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                steps.push(Step::Regex(
                    RegexParser::required(patterns).with_required(regex.required),
                ));
            }
            ParserStep::Syslog(syslog) => steps.push(Step::Syslog {
                zone: timestamp::zone(syslog.timezone.as_deref())
                    .map_err(|problem| invalid("syslog.timezone", problem))?,
            }),
            ParserStep::Timestamp(stamp) => {
                if stamp.field.is_empty() {
                    return Err(invalid("timestamp.field", "must not be empty".to_owned()));
                }
                let layouts = if stamp.layouts.is_empty() {
                    Layout::defaults()
                } else {
                    stamp
                        .layouts
                        .iter()
                        .enumerate()
                        .map(|(position, layout)| {
                            Layout::named(layout).map_err(|problem| {
                                invalid(&format!("timestamp.layouts[{position}]"), problem)
                            })
                        })
                        .collect::<Result<_, _>>()?
                };
                steps.push(Step::Timestamp(TimestampParser {
                    fields: vec![fields::ecs_name(&stamp.field).to_owned()],
                    layouts,
                    zone: timestamp::zone(stamp.timezone.as_deref())
                        .map_err(|problem| invalid("timestamp.timezone", problem))?,
                }));
            }
            ParserStep::Level(level) => steps.push(Step::Level(LevelParser {
                field: level
                    .field
                    .as_deref()
                    .map_or("log.level", fields::ecs_name)
                    .to_owned(),
                map: level
                    .map
                    .iter()
                    .map(|(from, to)| (from.clone(), to.clone()))
                    .collect(),
            })),
        }
    }
    Ok(steps)
}

/// The part of a line a container runtime split, waiting for the rest.
#[derive(Debug)]
struct Pending {
    offset: u64,
    text: String,
    stream: String,
    time_unix_nano: i64,
    truncated: bool,
    /// Where the last part ends in the file.
    end: u64,
}

/// The parsing of one file: its chain, the buffers a line is parsed into, the
/// parts of a split line, and when its failures were last logged.
#[derive(Debug)]
pub(crate) struct LineParser {
    chain: Arc<Chain>,
    path: String,
    /// The pod and container the path names, for a chain with the `kubernetes`
    /// step.
    pod_fields: Option<Vec<(&'static str, String)>>,
    max_line_bytes: usize,
    fields: Fields,
    body: String,
    message: Option<String>,
    pending: Option<Pending>,
    last_failure_log: Option<Instant>,
    failures_not_logged: u64,
}

impl LineParser {
    pub(crate) fn new(chain: Arc<Chain>, path: &std::path::Path, max_line_bytes: usize) -> Self {
        let pod_fields = chain
            .steps
            .iter()
            .any(|step| matches!(step, Step::Kubernetes))
            .then(|| kubernetes::PodLog::from_path(path).map(|pod| pod.fields()))
            .flatten();
        Self {
            chain,
            path: path.display().to_string(),
            pod_fields,
            max_line_bytes,
            fields: Fields::default(),
            body: String::new(),
            message: None,
            pending: None,
            last_failure_log: None,
            failures_not_logged: 0,
        }
    }

    /// `line` parsed; `None` while it is a part of a split line, held until the
    /// last part comes.
    pub(crate) fn parse<'s>(&'s mut self, line: WireLine<'s>) -> Option<WireLine<'s>> {
        self.fields.clear();
        self.add_pod_fields();
        self.message = None;
        let mut event_time = None;
        let mut offset = line.offset;
        let mut length = line.length;
        let mut truncated = line.truncated;
        let Ok(text) = std::str::from_utf8(line.message) else {
            let name = self.chain.steps[0].name();
            self.failed(0, name, "the line is not UTF-8", line.offset);
            return Some(self.wire(line, None, offset, length, truncated));
        };
        self.body.clear();
        self.body.push_str(text);
        for (index, step) in self.chain.steps.iter().enumerate() {
            let before = self.fields.len();
            let result = match step {
                Step::Cri | Step::Docker | Step::Container => {
                    let docker = match step {
                        Step::Container => text.trim_start().starts_with('{'),
                        _ => matches!(step, Step::Docker),
                    };
                    let parsed = if docker {
                        container::docker(text)
                    } else {
                        container::cri(text)
                    };
                    if self
                        .pending
                        .as_ref()
                        .is_some_and(|pending| pending.end != line.offset)
                    {
                        // Parts are consecutive lines; anything else (the file
                        // was truncated and read again) starts over.
                        self.pending = None;
                    }
                    match parsed {
                        Ok(entry) if entry.partial => {
                            let pending = self.pending.get_or_insert_with(|| Pending {
                                offset: line.offset,
                                text: String::new(),
                                stream: entry.stream.to_string(),
                                time_unix_nano: entry.time_unix_nano,
                                truncated: false,
                                end: 0,
                            });
                            pending.end = line.offset + line.length;
                            append_bounded(pending, &entry.text, self.max_line_bytes);
                            return None;
                        }
                        Ok(entry) => {
                            let mut joined = String::new();
                            let mut time = entry.time_unix_nano;
                            if let Some(mut pending) = self.pending.take() {
                                append_bounded(&mut pending, &entry.text, self.max_line_bytes);
                                offset = pending.offset;
                                length = line.offset + line.length - pending.offset;
                                truncated |= pending.truncated;
                                time = pending.time_unix_nano;
                                joined = pending.text;
                            } else {
                                joined.push_str(&entry.text);
                            }
                            event_time = Some(time);
                            self.fields.add_verbatim("log.iostream", &entry.stream);
                            self.body.clear();
                            self.body.push_str(&joined);
                            self.message = Some(joined);
                            Ok(())
                        }
                        Err(error) => Err(error),
                    }
                }
                Step::Json { message_field } => {
                    let body = std::mem::take(&mut self.body);
                    let mut message = None;
                    let result = json::parse(
                        &body,
                        &mut self.fields,
                        message_field.as_deref(),
                        &mut message,
                    );
                    self.body = body;
                    if let Some(message) = message {
                        self.body.clear();
                        self.body.push_str(&message);
                        self.message = Some(message);
                    }
                    result
                }
                Step::Logfmt => logfmt::parse(&self.body, &mut self.fields),
                Step::Regex(regex) => regex.parse(&self.body, &mut self.fields),
                Step::Syslog { zone } => {
                    let body = std::mem::take(&mut self.body);
                    let result = syslog::parse(&body, zone, &mut self.fields).map(|parsed| {
                        if parsed.time_unix_nano.is_some() {
                            event_time = parsed.time_unix_nano;
                        }
                        parsed.body.to_owned()
                    });
                    match result {
                        Ok(inner) => {
                            self.body = inner;
                            Ok(())
                        }
                        Err(error) => {
                            self.body = body;
                            Err(error)
                        }
                    }
                }
                Step::Timestamp(stamp) => {
                    match stamp.fields.iter().find_map(|field| self.fields.get(field)) {
                        None => Ok(()),
                        Some(value) => timestamp::parse(value, &stamp.layouts, &stamp.zone)
                            .map(|time| event_time = Some(time)),
                    }
                }
                Step::Level(level) => {
                    level.apply(&mut self.fields);
                    Ok(())
                }
                // Its fields were added first, so that a line another step
                // cannot parse still names its pod.
                Step::Kubernetes => match &self.pod_fields {
                    Some(_) => Ok(()),
                    None => Err(format!(
                        "`{}` is not a Kubernetes container log (/var/log/pods/<namespace>_<pod>_<uid>/<container>/<n>.log or /var/log/containers/<pod>_<namespace>_<container>-<id>.log)",
                        self.path
                    )),
                },
            };
            if let Err(error) = result {
                self.fields.truncate(before);
                self.fields.flag_failure(PARSE_FAILURE_FIELD, step.name());
                self.failed(index, step.name(), &error, line.offset);
                break;
            }
        }
        Some(self.wire(line, event_time, offset, length, truncated))
    }

    /// The parts of a split line held, shipped as they are with the field
    /// `log.partial`: the file ends before the last part came.
    pub(crate) fn take_pending(&mut self, observed_unix_nano: i64) -> Option<WireLine<'_>> {
        let pending = self.pending.take()?;
        self.fields.clear();
        self.add_pod_fields();
        self.fields.add_verbatim("log.iostream", &pending.stream);
        self.message = Some(pending.text);
        Some(WireLine {
            offset: pending.offset,
            length: pending.end - pending.offset,
            observed_unix_nano,
            event_unix_nano: pending.time_unix_nano,
            message: self.message.as_deref().map_or(&[], str::as_bytes),
            fields: &self.fields,
            truncated: pending.truncated,
            invalid_utf8: false,
            partial: true,
        })
    }

    fn wire<'s>(
        &'s self,
        line: WireLine<'s>,
        event_time: Option<i64>,
        offset: u64,
        length: u64,
        truncated: bool,
    ) -> WireLine<'s> {
        WireLine {
            offset,
            length,
            event_unix_nano: event_time.unwrap_or(line.observed_unix_nano),
            message: self.message.as_deref().map_or(line.message, str::as_bytes),
            fields: &self.fields,
            truncated,
            ..line
        }
    }

    /// The pod and container of a Kubernetes container log, on every line.
    fn add_pod_fields(&mut self) {
        for (name, value) in self.pod_fields.iter().flatten() {
            self.fields.add_verbatim(name, value);
        }
    }

    /// Counts a failure of step `index`, and logs it unless this file's failures
    /// were logged less than a minute ago.
    fn failed(&mut self, index: usize, parser: &str, error: &str, offset: u64) {
        self.chain.failures[index].inc();
        let now = Instant::now();
        match self.last_failure_log {
            Some(last) if now.duration_since(last) < FAILURE_LOG_INTERVAL => {
                self.failures_not_logged += 1;
            }
            _ => {
                tracing::warn!(
                    path = %self.path,
                    parser,
                    offset,
                    error,
                    failures_since_last_log = self.failures_not_logged,
                    "log line could not be parsed; shipped as it is, flagged log.parse_failure"
                );
                self.last_failure_log = Some(now);
                self.failures_not_logged = 0;
            }
        }
    }
}

/// Appends `text` to the parts so far, up to `max` bytes (on a character boundary).
fn append_bounded(pending: &mut Pending, text: &str, max: usize) {
    let room = max.saturating_sub(pending.text.len());
    if text.len() <= room {
        pending.text.push_str(text);
    } else {
        let mut cut = room;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        pending.text.push_str(&text[..cut]);
        pending.truncated = true;
    }
}

#[cfg(test)]
mod tests;
