//! Processes that tests start: servers and Vigil binaries.
//!
//! Each [`ChildProcess`] runs in its own process group with stdout and stderr in a log
//! file under [`run_dir`], and is shadowed by a small bash watchdog that kills the
//! group once the test process is gone. The servers live in statics that are never
//! dropped, and a test process can die without unwinding, so without the watchdog a
//! broker or an agent could outlive the tests that started it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{self, Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use crate::wait::poll_until;

/// How long [`ChildProcess::terminate`] waits for a process to exit after SIGTERM.
pub const TERMINATE_DEADLINE: Duration = Duration::from_secs(30);

/// How many trailing lines of a log [`ChildProcess::log_tail`] returns.
pub const LOG_TAIL_LINES: usize = 40;

/// Run directories of finished test processes are removed once they are this old,
/// so the logs of a failed run stay around for a while to be read.
const STALE_RUN_DIR_AGE: Duration = Duration::from_secs(60 * 60);

const RUN_DIR_PREFIX: &str = "vigil-test-";

/// Kills the process group `$2` once process `$1` (the test process) has exited, then
/// removes scratch directory `$3` if one is given.
///
/// It stops watching, without killing anything, when the group is gone on its own.
const WATCHDOG_SCRIPT: &str = r#"
test_process=$1
group=$2
scratch_dir=$3
while kill -0 "$test_process" 2>/dev/null && kill -0 -- "-$group" 2>/dev/null; do
    sleep 0.5
done
if ! kill -0 "$test_process" 2>/dev/null; then
    kill -KILL -- "-$group" 2>/dev/null
    if [ -n "$scratch_dir" ]; then
        rm -rf -- "$scratch_dir"
    fi
fi
exit 0
"#;

/// The directory of this test process's logs and server data, created on first use.
///
/// Its path is printed once to stderr. Directories left by earlier test processes
/// that are no longer running are removed after an hour.
pub fn run_dir() -> &'static Path {
    static RUN_DIR: OnceLock<PathBuf> = OnceLock::new();
    RUN_DIR.get_or_init(|| {
        let temp = std::env::temp_dir();
        remove_stale_run_dirs(&temp);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{RUN_DIR_PREFIX}{}-", process::id()))
            .tempdir_in(&temp)
            .unwrap_or_else(|error| {
                panic!(
                    "cannot create a test run directory in {}: {error}",
                    temp.display()
                )
            })
            .keep();
        eprintln!(
            "vigil-tests: logs and server data of this test process are in {}",
            dir.display()
        );
        dir
    })
}

/// Returns a new directory under [`run_dir`] named after `purpose` and a counter.
pub fn new_work_dir(purpose: &str) -> PathBuf {
    let dir = run_dir().join(crate::unique_name(purpose));
    fs::create_dir_all(&dir)
        .unwrap_or_else(|error| panic!("cannot create directory {}: {error}", dir.display()));
    dir
}

fn remove_stale_run_dirs(temp: &Path) {
    let Ok(entries) = fs::read_dir(temp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner_pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(RUN_DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let owner_running = Path::new("/proc").join(owner_pid.to_string()).exists();
        let old_enough = entry
            .metadata()
            .and_then(|metadata| metadata.modified())
            .ok()
            .and_then(|modified| SystemTime::now().duration_since(modified).ok())
            .is_some_and(|age| age > STALE_RUN_DIR_AGE);
        if !owner_running && old_enough {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A process started by a test, killed with its whole process group when dropped.
///
/// Stdout and stderr go to one log file; stdin is closed.
#[derive(Debug)]
pub struct ChildProcess {
    /// Short name used in log file names and failure messages.
    name: String,
    /// The process itself; it leads its own process group.
    child: Child,
    /// The bash watchdog that kills the group if the test process dies first.
    watchdog: Child,
    /// Where stdout and stderr of the process go.
    log_path: PathBuf,
}

impl ChildProcess {
    /// Starts `command` with its output in `<run_dir>/logs/<name>.log`.
    ///
    /// A second process with the same name gets `<name>.2.log`, and so on.
    pub fn spawn(name: &str, command: Command) -> ChildProcess {
        Self::spawn_inner(name, command, None)
    }

    /// Like [`spawn`](Self::spawn), and removes `scratch_dir` (which must lie in
    /// [`run_dir`]) once the test process has exited.
    ///
    /// For server data such as etcd's preallocated write-ahead log, which is large and
    /// of no use after the test; the logs stay.
    pub fn spawn_with_scratch_dir(
        name: &str,
        command: Command,
        scratch_dir: &Path,
    ) -> ChildProcess {
        assert!(
            scratch_dir.starts_with(run_dir()) && scratch_dir != run_dir(),
            "scratch directory {} must lie inside the run directory {}",
            scratch_dir.display(),
            run_dir().display()
        );
        Self::spawn_inner(name, command, Some(scratch_dir))
    }

    fn spawn_inner(name: &str, command: Command, scratch_dir: Option<&Path>) -> ChildProcess {
        let log_dir = run_dir().join("logs");
        fs::create_dir_all(&log_dir).unwrap_or_else(|error| {
            panic!("cannot create log directory {}: {error}", log_dir.display())
        });
        let (log_path, log_file) = create_log_file(&log_dir, name);
        Self::spawn_with_log(name, command, log_path, log_file, scratch_dir)
    }

    fn spawn_with_log(
        name: &str,
        mut command: Command,
        log_path: PathBuf,
        log_file: File,
        scratch_dir: Option<&Path>,
    ) -> ChildProcess {
        let stderr_file = log_file.try_clone().unwrap_or_else(|error| {
            panic!("cannot share log file {}: {error}", log_path.display())
        });
        command
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(stderr_file)
            .process_group(0);
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {name} ({command:?}): {error}"));
        let watchdog = Command::new("bash")
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("vigil-test-watchdog")
            .arg(process::id().to_string())
            .arg(child.id().to_string())
            .arg(scratch_dir.unwrap_or(Path::new("")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group, so that a Ctrl-C to the test run does not end the watchdog
            // before it has cleaned up.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start the watchdog for {name}: {error}"));
        ChildProcess {
            name: name.to_owned(),
            child,
            watchdog,
            log_path,
        }
    }

    /// The name given at spawn time.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id, which is also the id of its process group.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to the whole process group: a stopped
    /// server accepts connections but answers nothing, like a hung one.
    pub fn signal_group(&self, signal: &str) {
        assert!(
            signal_group(self.pid(), signal),
            "kill -{signal} of {} failed",
            self.name
        );
    }

    /// The file holding the process's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last [`LOG_TAIL_LINES`] lines of the log, headed by the log's path.
    pub fn log_tail(&self) -> String {
        let content = fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_else(|error| format!("(cannot read log: {error})"));
        let lines: Vec<&str> = content.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
        format!(
            "--- last {} lines of {} ---\n{}\n--- end of log ---",
            tail.len(),
            self.log_path.display(),
            tail.join("\n")
        )
    }

    /// The exit status if the process has exited, without waiting.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap_or_else(|error| {
            panic!("cannot check whether {} has exited: {error}", self.name)
        })
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none()
    }

    /// Waits up to `deadline` for the process to exit by itself.
    ///
    /// Panics with the log tail if it is still running then.
    pub fn wait_for_exit(&mut self, deadline: Duration) -> ExitStatus {
        match poll_until(deadline, || self.exit_status()) {
            Some(status) => status,
            None => panic!(
                "{} (pid {}) still running after {deadline:?}\n{}",
                self.name,
                self.pid(),
                self.log_tail()
            ),
        }
    }

    /// Sends SIGKILL to the process group and waits for the process and the rest of
    /// its group to be gone.
    pub fn kill_hard(&mut self) -> ExitStatus {
        signal_group(self.pid(), "KILL");
        let status = self
            .child
            .wait()
            .unwrap_or_else(|error| panic!("cannot wait for {}: {error}", self.name));
        if !self.await_group_gone() {
            panic!(
                "{} (pid {}): its process group outlived SIGKILL by {TERMINATE_DEADLINE:?}",
                self.name,
                self.pid()
            );
        }
        status
    }

    /// Sends SIGTERM to the process group and waits for the process and the rest of
    /// its group to exit: a launcher (noida-db's Python wrapper) dies at once while
    /// the server it started is still saving its data, and a server started again
    /// on the same data before that ends would read what was there before.
    ///
    /// Panics, after killing them, if they have not exited within
    /// [`TERMINATE_DEADLINE`]: a process that ignores SIGTERM would be killed by the
    /// service manager too.
    pub fn terminate(&mut self) -> ExitStatus {
        if let Some(status) = self.exit_status() {
            return status;
        }
        signal_group(self.pid(), "TERM");
        if let Some(status) = poll_until(TERMINATE_DEADLINE, || self.exit_status())
            && self.await_group_gone()
        {
            return status;
        }
        self.kill_hard();
        panic!(
            "{} (pid {}) or a process it started did not exit within {TERMINATE_DEADLINE:?} of SIGTERM\n{}",
            self.name,
            self.pid(),
            self.log_tail()
        );
    }

    /// Waits up to [`TERMINATE_DEADLINE`] until no process of the group is left
    /// running; whether none is.
    fn await_group_gone(&self) -> bool {
        poll_until(TERMINATE_DEADLINE, || {
            (!group_has_live_process(self.pid())).then_some(())
        })
        .is_some()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // The whole group, in case the process left children behind.
        signal_group(self.pid(), "KILL");
        let _ = self.child.wait();
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
    }
}

fn create_log_file(log_dir: &Path, name: &str) -> (PathBuf, File) {
    for attempt in 1.. {
        let file_name = if attempt == 1 {
            format!("{name}.log")
        } else {
            format!("{name}.{attempt}.log")
        };
        let path = log_dir.join(file_name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return (path, file),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(error) => panic!("cannot create log file {}: {error}", path.display()),
        }
    }
    unreachable!("the attempt counter is unbounded")
}

/// Sends `signal` (a name such as `TERM`) to process group `group`; whether it was
/// delivered (not to a group that is already gone). Uses bash's built-in `kill`,
/// because the workspace forbids `unsafe` and a minimal Debian has no procps.
fn signal_group(group: u32, signal: &str) -> bool {
    Command::new("bash")
        .arg("-c")
        .arg(r#"kill -s "$1" -- "-$2" 2>/dev/null"#)
        .arg("vigil-test-kill")
        .arg(signal)
        .arg(group.to_string())
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Whether a process of `group` is still running, read from `/proc`: zombies do not
/// count, as they wait only for init to reap them.
fn group_has_live_process(group: u32) -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
        let Some((_, fields)) = stat.rsplit_once(") ") else {
            return false;
        };
        let mut fields = fields.split(' ');
        let state = fields.next();
        let process_group = fields.nth(1).and_then(|field| field.parse::<u32>().ok());
        process_group == Some(group) && state != Some("Z")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminate_reports_the_exit_and_the_log_is_kept() {
        let mut command = Command::new("bash");
        command.arg("-c").arg("echo started; exec sleep 60");
        let mut process = ChildProcess::spawn("sleeper", command);
        crate::wait_until("sleeper to log", Duration::from_secs(10), || {
            process.log_tail().contains("started").then_some(())
        });
        assert!(process.is_running());
        let status = process.terminate();
        assert!(!status.success());
        assert!(process.log_tail().contains("started"));
    }

    #[test]
    fn terminate_waits_for_what_a_launcher_started_to_finish_exiting() {
        let scratch = tempfile::tempdir().unwrap();
        let saved = scratch.path().join("saved");
        // The launcher dies of SIGTERM at once; the server it started takes a moment
        // to save its data, as noida-db does behind its Python wrapper.
        let server =
            r#"trap 'sleep 1; touch "$1"; exit 0' TERM; echo ready; while :; do sleep 0.1; done"#;
        let mut command = Command::new("bash");
        command
            .arg("-c")
            .arg(r#"bash -c "$1" server "$2" & wait"#)
            .arg("launcher")
            .arg(server)
            .arg(&saved);
        let mut process = ChildProcess::spawn("launcher", command);
        crate::wait_until("the server to start", Duration::from_secs(10), || {
            process.log_tail().contains("ready").then_some(())
        });
        process.terminate();
        assert!(
            saved.exists(),
            "terminate returned before the server had saved its data"
        );
    }

    #[test]
    fn kill_hard_ends_children_of_the_process_too() {
        let mut command = Command::new("bash");
        command.arg("-c").arg("sleep 60 & echo $! ; wait");
        let mut process = ChildProcess::spawn("parent-of-sleeper", command);
        let grandchild_pid: u32 =
            crate::wait_until("pid of the grandchild", Duration::from_secs(10), || {
                fs::read_to_string(process.log_path())
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            });
        process.kill_hard();
        crate::wait_until("grandchild to be gone", Duration::from_secs(10), || {
            let stat = fs::read_to_string(format!("/proc/{grandchild_pid}/stat")).ok();
            // Gone, or a zombie waiting for init to reap it.
            stat.is_none_or(|stat| stat.contains(") Z ")).then_some(())
        });
    }
}
