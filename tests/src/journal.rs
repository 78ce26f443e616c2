//! A real systemd journal for the journald tests: entries are written in the
//! journal export format and turned into a journal file by systemd's own
//! `systemd-journal-remote` (Debian package `systemd-journal-remote`), the
//! same kind of file journald writes and journalctl reads.

use crate::deployment::Deployment;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where Debian installs `systemd-journal-remote`.
const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";

/// The boot id of every entry written.
const BOOT_ID: &str = "5b1c4a7fa0cf4b1f9d0f1f2e3d4c5b6a";

/// One entry: its fields in the order written; values may be any bytes.
#[derive(Debug, Clone, Default)]
pub struct JournalEntry {
    pub fields: Vec<(String, Vec<u8>)>,
}

impl JournalEntry {
    /// An entry of `unit` at `priority` (0 to 7) saying `message` (any bytes),
    /// from PID 4242 of host `journal-host`.
    pub fn new(unit: &str, priority: u8, message: &[u8]) -> JournalEntry {
        JournalEntry::default()
            .with("MESSAGE", message)
            .with("PRIORITY", priority.to_string().as_bytes())
            .with("_SYSTEMD_UNIT", unit.as_bytes())
            .with("_PID", b"4242")
            .with("_HOSTNAME", b"journal-host")
            .with(
                "SYSLOG_IDENTIFIER",
                unit.trim_end_matches(".service").as_bytes(),
            )
            .with("SYSLOG_FACILITY", b"3")
    }

    /// Adds (or repeats) field `name`.
    pub fn with(mut self, name: &str, value: &[u8]) -> JournalEntry {
        self.fields.push((name.to_owned(), value.to_vec()));
        self
    }
}

/// A journal directory holding one file that grows with every `append`.
#[derive(Debug)]
pub struct TestJournal {
    pub directory: PathBuf,
    file: PathBuf,
    /// Monotonic time of the next entry, in microseconds.
    monotonic: u64,
}

impl TestJournal {
    /// An empty journal directory `dir` (created).
    pub fn create(dir: &Path) -> TestJournal {
        std::fs::create_dir_all(dir).expect("journal directory created");
        TestJournal {
            directory: dir.to_path_buf(),
            file: dir.join("remote.journal"),
            monotonic: 1_000_000,
        }
    }

    /// Appends `entries`, stamped `realtime_micros`, `realtime_micros + 1`, ...,
    /// with `systemd-journal-remote`.
    pub fn append(&mut self, entries: &[JournalEntry], realtime_micros: u64) {
        let mut export = Vec::new();
        for (entry, number) in entries.iter().zip(0u64..) {
            write_text(
                &mut export,
                "__REALTIME_TIMESTAMP",
                &(realtime_micros + number).to_string(),
            );
            write_text(
                &mut export,
                "__MONOTONIC_TIMESTAMP",
                &self.monotonic.to_string(),
            );
            write_text(&mut export, "_BOOT_ID", BOOT_ID);
            self.monotonic += 1;
            for (name, value) in &entry.fields {
                if value.contains(&b'\n') || std::str::from_utf8(value).is_err() {
                    export.extend_from_slice(name.as_bytes());
                    export.push(b'\n');
                    export.extend_from_slice(&(value.len() as u64).to_le_bytes());
                    export.extend_from_slice(value);
                    export.push(b'\n');
                } else {
                    write_text(&mut export, name, &String::from_utf8_lossy(value));
                }
            }
            export.push(b'\n');
        }
        let mut child = Command::new(JOURNAL_REMOTE)
            .arg(format!("--output={}", self.file.display()))
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("{JOURNAL_REMOTE} cannot run ({error}); bash scripts/install-test-deps.sh installs it")
            });
        child
            .stdin
            .take()
            .expect("stdin piped")
            .write_all(&export)
            .expect("export format written to systemd-journal-remote");
        let output = child
            .wait_with_output()
            .expect("systemd-journal-remote ends");
        assert!(
            output.status.success(),
            "systemd-journal-remote failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

fn write_text(export: &mut Vec<u8>, name: &str, value: &str) {
    export.extend_from_slice(format!("{name}={value}\n").as_bytes());
}

/// Writes an agent config of `deployment` that reads the journal with `settings`
/// (the inside of the YAML flow mapping of `journald`, e.g.
/// `directory: '/d', units: [a.service]`) and tails no log file that exists.
pub fn journald_agent_config(
    deployment: &Deployment,
    name: &str,
    settings: &str,
    http_port: u16,
) -> PathBuf {
    let no_file = deployment.work.join(format!("{name}-no-such.log"));
    let config =
        deployment.logs_agent_config(name, &[format!("path: '{}'", no_file.display())], http_port);
    let mut text = std::fs::read_to_string(&config).expect("agent config read");
    text.push_str(&format!("shutdown_timeout: 3s\njournald: {{{settings}}}\n"));
    std::fs::write(&config, text).expect("agent config written");
    config
}
