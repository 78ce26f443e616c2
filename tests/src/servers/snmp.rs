//! An SNMP agent (net-snmp's snmpd) for Vigil's SNMP poller to query.
//!
//! It serves the real MIBs of the test machine (system, IF-MIB's ifTable and ifXTable
//! with `lo`, HOST-RESOURCES-MIB) to a v2c community and a v3 authPriv user. Debian
//! ships no MIB files for these modules, so use numeric OIDs with the net-snmp tools.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{StartFailure, await_ready, start_with_retries, system_binary};
use crate::ports::free_udp_port;
use crate::process::{ChildProcess, new_work_dir};

/// The v2c read-only community, accepted from 127.0.0.1 only.
pub const SNMP_COMMUNITY: &str = "public";
/// The SNMPv3 user, allowed authPriv reads of every OID.
pub const SNMP_V3_USER: &str = "vigiltest";
/// The authentication protocol of [`SNMP_V3_USER`].
pub const SNMP_V3_AUTH_PROTOCOL: &str = "SHA";
/// The authentication passphrase of [`SNMP_V3_USER`].
pub const SNMP_V3_AUTH_PASSWORD: &str = "authpass123";
/// The privacy (encryption) protocol of [`SNMP_V3_USER`].
pub const SNMP_V3_PRIV_PROTOCOL: &str = "AES";
/// The privacy passphrase of [`SNMP_V3_USER`].
pub const SNMP_V3_PRIV_PASSWORD: &str = "privpass123";

/// net-snmp tool arguments for a v2c request with [`SNMP_COMMUNITY`].
pub const SNMP_V2C_ARGS: [&str; 3] = ["-v2c", "-c", SNMP_COMMUNITY];

/// net-snmp tool arguments for a v3 authPriv request as [`SNMP_V3_USER`].
pub const SNMP_V3_AUTH_PRIV_ARGS: [&str; 13] = [
    "-v3",
    "-l",
    "authPriv",
    "-u",
    SNMP_V3_USER,
    "-a",
    SNMP_V3_AUTH_PROTOCOL,
    "-A",
    SNMP_V3_AUTH_PASSWORD,
    "-x",
    SNMP_V3_PRIV_PROTOCOL,
    "-X",
    SNMP_V3_PRIV_PASSWORD,
];

/// The OID of SNMPv2-MIB::sysUpTime.0, present on every agent.
pub const SYS_UPTIME_OID: &str = "1.3.6.1.2.1.1.3.0";

/// The sysName the agent reports, so tests can tell it from another agent.
pub const SNMP_SYS_NAME: &str = "vigil-test-agent";

/// An snmpd on a free UDP port of 127.0.0.1, with its own config and state directory.
#[derive(Debug)]
pub struct SnmpAgent {
    /// The agent's UDP port on 127.0.0.1.
    port: u16,
    /// Holds the config, the persistent state of agent and tools, and an empty MIB
    /// dir; removed with the agent.
    dir: PathBuf,
    /// The running snmpd.
    process: ChildProcess,
}

impl SnmpAgent {
    /// Starts snmpd and waits until it answers a v2c GET of sysUpTime.
    pub fn start() -> SnmpAgent {
        let snmpd = system_binary("snmpd", "snmpd");
        start_with_retries("snmpd", || Self::try_start(&snmpd))
    }

    fn try_start(snmpd: &Path) -> Result<SnmpAgent, StartFailure> {
        let dir = new_work_dir("snmpd");
        let config = dir.join("snmpd.conf");
        write_file(&config, &agent_config());
        let port = free_udp_port();
        let mut command = Command::new(snmpd);
        command
            // Foreground, log to stdout, read no config but ours.
            .arg("-f")
            .arg("-Lo")
            .arg("-C")
            .arg("-c")
            .arg(&config)
            .arg("-p")
            .arg(dir.join("snmpd.pid"))
            .arg(format!("udp:127.0.0.1:{port}"))
            .current_dir(&dir);
        set_snmp_environment(&mut command, &dir, "agent-state");
        let mut process = ChildProcess::spawn_with_scratch_dir("snmpd", command, &dir);
        let agent = SnmpAgentProbe { port, dir: &dir };
        await_ready(&mut process, "snmpd", || {
            agent.snmpget(&SNMP_V2C_ARGS, SYS_UPTIME_OID).is_ok()
        })?;
        Ok(SnmpAgent { port, dir, process })
    }

    /// The agent's address, e.g. `127.0.0.1:40124`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The agent's UDP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs net-snmp's `snmpget` against the agent with `security_args` (such as
    /// [`SNMP_V2C_ARGS`] or [`SNMP_V3_AUTH_PRIV_ARGS`]) and numeric output.
    ///
    /// Returns the printed value line, or the tool's error output if it failed.
    pub fn snmpget(&self, security_args: &[&str], oid: &str) -> Result<String, String> {
        SnmpAgentProbe {
            port: self.port,
            dir: &self.dir,
        }
        .snmpget(security_args, oid)
    }

    /// The last lines of snmpd's log.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}

/// Queries an agent with net-snmp's tools, before and after it is a full [`SnmpAgent`].
struct SnmpAgentProbe<'a> {
    port: u16,
    dir: &'a Path,
}

impl SnmpAgentProbe<'_> {
    fn snmpget(&self, security_args: &[&str], oid: &str) -> Result<String, String> {
        let snmpget = system_binary("snmpget", "snmp");
        let mut command = Command::new(snmpget);
        command
            .args(security_args)
            // Half a second per try, no retries: the caller polls.
            .args(["-t", "0.5", "-r", "0", "-On"])
            .arg(format!("127.0.0.1:{}", self.port))
            .arg(oid);
        set_snmp_environment(&mut command, self.dir, "tool-state");
        let output = command
            .output()
            .map_err(|error| format!("cannot run snmpget: {error}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            Err(format!(
                "snmpget failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }
}

/// Keeps net-snmp's state in the test directory and stops it from looking for MIB
/// files, which Debian does not ship and whose absence fills logs with warnings.
fn set_snmp_environment(command: &mut Command, dir: &Path, state_dir: &str) {
    let empty_mib_dir = dir.join("no-mibs");
    let _ = fs::create_dir_all(&empty_mib_dir);
    command
        .env("SNMP_PERSISTENT_DIR", dir.join(state_dir))
        .env("MIBDIRS", empty_mib_dir)
        .env("MIBS", "");
}

fn agent_config() -> String {
    format!(
        "# Written by vigil-tests for one test process.\n\
         view all included .1\n\
         rocommunity {SNMP_COMMUNITY} 127.0.0.1 -V all\n\
         createUser {SNMP_V3_USER} {SNMP_V3_AUTH_PROTOCOL} \"{SNMP_V3_AUTH_PASSWORD}\" \
         {SNMP_V3_PRIV_PROTOCOL} \"{SNMP_V3_PRIV_PASSWORD}\"\n\
         rouser {SNMP_V3_USER} priv -V all\n\
         sysName {SNMP_SYS_NAME}\n\
         sysLocation loopback\n\
         sysContact vigil-tests\n\
         dontLogTCPWrappersConnects yes\n"
    )
}

fn write_file(path: &Path, content: &str) {
    fs::write(path, content)
        .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
}

impl Drop for SnmpAgent {
    fn drop(&mut self) {
        self.process.kill_hard();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
