//! Log shipping under every fault at once: files written at full speed and rotated
//! both ways (rename and copytruncate), the agent SIGKILLed three times and the
//! broker restarted, and still exactly one intact document per line in the index.
//!
//! Every file and every generation starts with the same header line, as W3C or
//! CSV logs do, so a file is told from another by more than its first line.
//! The agent tails a glob that matches the live files and their rotated
//! generations, so lines written just before a rotation are read from the rotated
//! file; recognising a file by its first bytes keeps a renamed or copied file
//! from being read twice, and content-derived document ids absorb what is sent
//! again after a crash.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vigil_tests::deployment::{Deployment, metric_value};
use vigil_tests::ports::free_tcp_ports;
use vigil_tests::servers::KafkaBroker;
use vigil_tests::wait::poll_until;
use vigil_tests::{elastic, wait_until};

/// Files written in turn, one line each.
const FILES: usize = 4;
/// Lines written over all files.
const LINES: usize = 200_000;
/// Lines of one file between two of its rotations.
const ROTATE_EVERY: usize = 10_000;
/// Lines written (over all files) at which the agent is SIGKILLed; it is started
/// again [`DOWN_FOR`] lines later, so rotations also happen while it is down.
const KILL_AT: [usize; 3] = [50_000, 100_000, 150_000];
/// Lines written while the agent is down.
const DOWN_FOR: usize = 10_000;
/// Lines written at which the broker is stopped; it is started again [`DOWN_FOR`]
/// lines later while the agent keeps running.
const BROKER_RESTART_AT: usize = 120_000;
/// How long the index may take to hold every line once all are written.
const INDEX_DEADLINE: Duration = Duration::from_secs(300);
/// Missing or duplicated lines listed per file when the test fails.
const SAMPLE: usize = 10;
/// The first line of every file and generation, the same in all of them.
const HEADER: &str = "#Fields: date time s-ip cs-method cs-uri-stem sc-status time-taken";

/// How a file is rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rotation {
    /// The file is renamed to its next generation and a new one is created.
    Rename,
    /// The file is copied to its next generation and truncated in place.
    CopyTruncate,
}

/// One application log file and its rotated generations `<live>.1`, `<live>.2`, …
///
/// Generations are never reused or deleted, so no line disappears before the agent
/// could read it, however long it was down.
#[derive(Debug)]
struct AppLog {
    /// Which file, for the line texts and the rotation schedule.
    number: usize,
    live: PathBuf,
    writer: BufWriter<File>,
    /// Lines written to this file so far, over all generations.
    written: usize,
    /// Generations rotated away so far.
    generations: usize,
    /// Header lines written, one per generation.
    headers: usize,
}

impl AppLog {
    fn create(dir: &Path, number: usize) -> AppLog {
        let live = dir.join(format!("app-{number}.log"));
        let writer = Self::open(&live);
        let mut log = AppLog {
            number,
            live,
            writer,
            written: 0,
            generations: 0,
            headers: 0,
        };
        log.write_header();
        log
    }

    /// Starts a generation with the header line all files share.
    fn write_header(&mut self) {
        writeln!(self.writer, "{HEADER}").expect("header written");
        self.headers += 1;
    }

    /// Opens (creating) `path` for appending, so that writes after a truncation
    /// start again at offset 0.
    fn open(path: &Path) -> BufWriter<File> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|error| panic!("cannot open {}: {error}", path.display()));
        BufWriter::new(file)
    }

    /// Appends this file's next line, rotating first when one is due, and returns it.
    ///
    /// The buffer goes to the file whenever it fills, so the agent sees partial
    /// lines too. File `n` rotates a quarter period after file `n - 1`, so rotations
    /// are spread over the run; each file alternates between the two kinds.
    fn write_next(&mut self) -> String {
        let offset = self.number * ROTATE_EVERY / FILES;
        if self.written > 0 && (self.written + offset).is_multiple_of(ROTATE_EVERY) {
            let rotation = if (self.generations + self.number).is_multiple_of(2) {
                Rotation::Rename
            } else {
                Rotation::CopyTruncate
            };
            self.rotate(rotation);
        }
        let text = line_text(self.number, self.written);
        writeln!(self.writer, "{text}").expect("log line written");
        self.written += 1;
        text
    }

    fn rotate(&mut self, rotation: Rotation) {
        self.flush();
        self.generations += 1;
        let mut rotated = self.live.clone().into_os_string();
        rotated.push(format!(".{}", self.generations));
        let rotated = PathBuf::from(rotated);
        match rotation {
            Rotation::Rename => {
                std::fs::rename(&self.live, &rotated).expect("log renamed");
                self.writer = Self::open(&self.live);
            }
            Rotation::CopyTruncate => {
                std::fs::copy(&self.live, &rotated).expect("log copied");
                self.writer.get_ref().set_len(0).expect("log truncated");
            }
        }
        self.write_header();
    }

    fn flush(&mut self) {
        self.writer.flush().expect("log flushed");
    }
}

/// The text of line `seq` of file `file`: unique, sortable and with a payload whose
/// length and characters vary, so a cut or a mix-up shows.
fn line_text(file: usize, seq: usize) -> String {
    const ALPHABET: &[u8] =
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 =,:/-_";
    let length = (seq * 7919 + file * 31) % 97;
    let payload: String = (0..length)
        .map(|i| ALPHABET[(seq * 131 + i * 17 + file) % ALPHABET.len()] as char)
        .collect();
    let accent = if seq.is_multiple_of(7) {
        " é→✓"
    } else {
        ""
    };
    format!("file={file} seq={seq:07} {payload}{accent} end={seq}")
}

/// The (file, seq) a line text starts with, if it is one of ours.
fn parse_line(text: &str) -> Option<(usize, usize)> {
    let rest = text.strip_prefix("file=")?;
    let (file, rest) = rest.split_once(" seq=")?;
    let seq = rest.get(..7)?;
    Some((file.parse().ok()?, seq.parse().ok()?))
}

#[test]
fn rotated_files_agent_kills_and_a_broker_restart_lose_and_duplicate_no_line() {
    let started = Instant::now();
    let broker = KafkaBroker::start();
    let deployment = Deployment::on_broker("e2e-log-faults", &broker);
    let [agent_port, index_port] = free_tcp_ports(2)[..] else {
        unreachable!()
    };
    let index_config = deployment.aggregator_config("index", index_port);
    let _index = deployment.start_stage("index", &index_config, index_port);

    let log_dir = deployment.work.join("logs");
    std::fs::create_dir_all(&log_dir).unwrap();
    let mut logs: Vec<AppLog> = (0..FILES).map(|n| AppLog::create(&log_dir, n)).collect();
    let glob = log_dir.join("app-*.log*");
    let agent_config = deployment.logs_agent_config(
        "agent",
        &[format!(
            "path: '{}', dataset: e2e.faults, read_from: beginning",
            glob.display()
        )],
        agent_port,
    );
    let mut agent = Some(deployment.start_agent(&agent_config, agent_port));

    let mut expected = BTreeSet::new();
    let mut outage = Instant::now();
    for written in 0..LINES {
        if KILL_AT.contains(&written) {
            // No line stays cut in half while the test waits, which the agent would
            // ship as a partial line after its timeout.
            logs.iter_mut().for_each(AppLog::flush);
            // Kill once this agent process has shipped something, typically while
            // more batches are in flight and before its checkpoint caught up.
            wait_until("the agent to ship lines", Duration::from_secs(60), || {
                (metric_value(agent_port, "vigil_agent_log_lines_sent", "") > 0.0).then_some(())
            });
            agent.take().expect("agent running").kill_hard();
            eprintln!("log_faults: agent killed after {written} lines");
        }
        if KILL_AT.contains(&written.wrapping_sub(DOWN_FOR)) {
            logs.iter_mut().for_each(AppLog::flush);
            agent = Some(deployment.start_agent(&agent_config, agent_port));
            eprintln!("log_faults: agent restarted after {written} lines");
        }
        if written == BROKER_RESTART_AT {
            logs.iter_mut().for_each(AppLog::flush);
            outage = Instant::now();
            broker.stop();
            eprintln!("log_faults: broker stopped after {written} lines");
        }
        if written == BROKER_RESTART_AT + DOWN_FOR {
            logs.iter_mut().for_each(AppLog::flush);
            broker.restart();
            eprintln!(
                "log_faults: broker back after {written} lines, down for {:.1?}",
                outage.elapsed()
            );
        }
        expected.insert(logs[written % FILES].write_next());
    }
    logs.iter_mut().for_each(AppLog::flush);
    assert!(agent.is_some(), "the agent runs at the end");
    let headers: usize = logs.iter().map(|log| log.headers).sum();
    let documents = LINES + headers;
    eprintln!(
        "log_faults: {LINES} lines written in {:.1?}",
        started.elapsed()
    );

    // The index stage's count of the documents it created is cheap to poll; the
    // server is asked once everything seems there (a count refreshes the index,
    // which is slow on a large index of the test server).
    let indexed = poll_until(INDEX_DEADLINE, || {
        (metric_value(index_port, "vigil_index_documents_written", "") >= documents as f64)
            .then_some(())
    });
    if indexed.is_some() {
        wait_for_quiet_pipeline(agent_port, index_port);
    }
    let hits = elastic::all_hits(&deployment.logs_index);
    eprintln!(
        "log_faults: {} documents indexed after {:.1?}",
        hits.len(),
        started.elapsed()
    );
    let report = Diagnosis::of(&hits, &expected, headers);
    assert!(
        report.is_clean() && hits.len() == documents,
        "expected exactly {documents} documents, one per line ({headers} of them \
         header lines); found {}:\n{report}\
         pipeline: {}\nagent log: {}",
        hits.len(),
        pipeline_metrics(agent_port, index_port),
        agent
            .as_ref()
            .map_or_else(String::new, |a| a.log_path().display().to_string())
    );
}

/// The agent's and the index stage's counters, to tell which stage lost or
/// duplicated lines when the test fails.
fn pipeline_metrics(agent_port: u16, index_port: u16) -> String {
    let agent = |name| metric_value(agent_port, name, "");
    let index = |name| metric_value(index_port, name, "");
    format!(
        "last agent process read {} lines and sent {}; index stage consumed {} \
         messages, wrote {} documents and found {} already there",
        agent("vigil_agent_log_lines_read"),
        agent("vigil_agent_log_lines_sent"),
        index("vigil_index_messages_consumed"),
        index("vigil_index_documents_written"),
        index("vigil_index_documents_duplicate"),
    )
}

/// Waits until neither the agent nor the index stage makes progress any more, so
/// that a document sent late (a duplicate from a file read twice) is still counted.
fn wait_for_quiet_pipeline(agent_port: u16, index_port: u16) {
    let progress = || {
        (
            metric_value(agent_port, "vigil_agent_log_lines_sent", ""),
            metric_value(index_port, "vigil_index_documents_written", ""),
        )
    };
    let mut last = (progress(), Instant::now());
    wait_until("the pipeline to go quiet", Duration::from_secs(60), || {
        let now = progress();
        if now != last.0 {
            last = (now, Instant::now());
        }
        (last.1.elapsed() >= Duration::from_secs(2)).then_some(())
    });
}

/// What is wrong with the indexed lines: missing, duplicated or mangled ones.
#[derive(Debug, Default)]
struct Diagnosis {
    /// Expected lines not indexed, by file.
    missing: BTreeMap<usize, Vec<usize>>,
    /// Lines indexed more than once, by file: seq and each copy's path, offset and
    /// document id (copies at one path and offset differ in file identity).
    duplicated: BTreeMap<usize, Vec<(usize, Vec<String>)>>,
    /// Indexed messages that are no line the test wrote.
    unexpected: Vec<String>,
    /// Header lines indexed, and written.
    headers: (usize, usize),
}

impl Diagnosis {
    fn of(hits: &[Value], expected: &BTreeSet<String>, headers: usize) -> Diagnosis {
        let mut diagnosis = Diagnosis {
            headers: (0, headers),
            ..Diagnosis::default()
        };
        let mut copies: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for hit in hits {
            let source = &hit["_source"];
            let message = source["message"].as_str().unwrap_or_default();
            if message == HEADER {
                diagnosis.headers.0 += 1;
                continue;
            }
            let path = source["log"]["file"]["path"]
                .as_str()
                .or(source["log.file.path"].as_str())
                .unwrap_or("?");
            let offset = &source["log"]["offset"];
            let id = hit["_id"].as_str().unwrap_or("?");
            copies
                .entry(message)
                .or_default()
                .push(format!("{path}@{offset} (id {id})"));
        }
        for text in expected {
            if !copies.contains_key(text.as_str()) {
                let (file, seq) = parse_line(text).expect("expected lines parse");
                diagnosis.missing.entry(file).or_default().push(seq);
            }
        }
        for (message, places) in copies {
            if !expected.contains(message) {
                diagnosis.unexpected.push(message.to_owned());
            } else if places.len() > 1 {
                let (file, seq) = parse_line(message).expect("expected lines parse");
                diagnosis
                    .duplicated
                    .entry(file)
                    .or_default()
                    .push((seq, places));
            }
        }
        diagnosis
    }

    fn is_clean(&self) -> bool {
        self.missing.is_empty()
            && self.duplicated.is_empty()
            && self.unexpected.is_empty()
            && self.headers.0 == self.headers.1
    }
}

impl std::fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for file in 0..FILES {
            let missing = self.missing.get(&file).map_or(&[][..], Vec::as_slice);
            let duplicated = self.duplicated.get(&file).map_or(&[][..], Vec::as_slice);
            writeln!(
                f,
                "file {file}: {} missing (ranges {}), {} duplicated {:?}",
                missing.len(),
                ranges(missing),
                duplicated.len(),
                &duplicated[..duplicated.len().min(SAMPLE)],
            )?;
        }
        writeln!(
            f,
            "{} header lines indexed of {} written",
            self.headers.0, self.headers.1
        )?;
        writeln!(
            f,
            "{} unexpected messages, e.g. {:?}",
            self.unexpected.len(),
            &self.unexpected[..self.unexpected.len().min(SAMPLE)]
        )
    }
}

/// Sorted numbers as at most [`SAMPLE`] ranges, e.g. `[10..=19, 40..=40]`.
fn ranges(numbers: &[usize]) -> String {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for &n in numbers {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == n => *end = n,
            _ => ranges.push((n, n)),
        }
    }
    let shown: Vec<String> = ranges
        .iter()
        .take(SAMPLE)
        .map(|(start, end)| format!("{start}..={end}"))
        .collect();
    let more = ranges.len().saturating_sub(SAMPLE);
    if more > 0 {
        format!("[{}, and {more} more]", shown.join(", "))
    } else {
        format!("[{}]", shown.join(", "))
    }
}
