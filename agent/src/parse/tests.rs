//! Parser chains on real-looking lines: what each step and preset makes of them,
//! the event time, joined container lines, and lines that fail to parse.

use super::*;
use crate::tailer::wire::NO_FIELDS;
use vigil_runtime::SelfMetrics;

fn chain(yaml: &str) -> Arc<Chain> {
    let config: ParsersConfig = serde_saphyr::from_str(yaml).unwrap();
    let metrics = crate::self_metrics::AgentMetrics::register(&SelfMetrics::default());
    Chain::new(&config, "test", &metrics).unwrap()
}

fn line_parser(yaml: &str) -> LineParser {
    LineParser::new(
        chain(yaml),
        std::path::Path::new("/var/log/test.log"),
        128 * 1024,
    )
}

/// The line at `offset` of `length` bytes, read at time 7.
fn line(text: &str, offset: u64) -> WireLine<'_> {
    WireLine {
        offset,
        length: text.len() as u64 + 1,
        observed_unix_nano: 7,
        event_unix_nano: 7,
        message: text.as_bytes(),
        fields: &NO_FIELDS,
        truncated: false,
        invalid_utf8: false,
        partial: false,
    }
}

/// Fields, event time and message of `text` through `parser`.
fn parse(parser: &mut LineParser, text: &str) -> (Vec<(String, String)>, i64, String) {
    let parsed = parser.parse(line(text, 0)).expect("a whole line");
    (
        parsed
            .fields
            .iter()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect(),
        parsed.event_unix_nano,
        String::from_utf8(parsed.message.to_vec()).unwrap(),
    )
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(field, _)| field == name)
        .map(|(_, value)| value.as_str())
}

fn nanos(rfc3339: &str) -> i64 {
    i64::try_from(rfc3339.parse::<jiff::Timestamp>().unwrap().as_nanosecond()).unwrap()
}

const AUTH: &str = "[{preset: auth_log}]";

#[test]
fn auth_log_sshd_failed_password_for_an_invalid_user_gives_user_and_source() {
    let mut parser = line_parser(AUTH);
    let text = "2024-05-01T10:15:02.123456+02:00 bastion-1 sshd[23817]: Failed password for invalid user oracle from 203.0.113.7 port 50214 ssh2";
    let (fields, time, message) = parse(&mut parser, text);
    assert_eq!(field(&fields, "user.name"), Some("oracle"));
    assert_eq!(field(&fields, "source.ip"), Some("203.0.113.7"));
    assert_eq!(field(&fields, "source.port"), Some("50214"));
    assert_eq!(field(&fields, "event.outcome"), Some("failure"));
    assert_eq!(field(&fields, "process.name"), Some("sshd"));
    assert_eq!(field(&fields, "process.pid"), Some("23817"));
    assert_eq!(field(&fields, "host.hostname"), Some("bastion-1"));
    assert_eq!(time, nanos("2024-05-01T08:15:02.123456Z"));
    assert_eq!(message, text, "the message stays the line as read");
}

#[test]
fn auth_log_classic_stamp_accepted_publickey_is_a_success_in_the_configured_zone() {
    let mut parser = line_parser(AUTH);
    let text = "Mar  3 09:01:44 web-2 sshd[1201]: Accepted publickey for deploy from 198.51.100.23 port 41122 ssh2: ED25519 SHA256:abc";
    let (fields, _, _) = parse(&mut parser, text);
    assert_eq!(field(&fields, "user.name"), Some("deploy"));
    assert_eq!(field(&fields, "source.ip"), Some("198.51.100.23"));
    assert_eq!(field(&fields, "event.outcome"), Some("success"));
    assert_eq!(field(&fields, "ssh.method"), Some("publickey"));
    let mut parser = line_parser("[{syslog: {timezone: Europe/Berlin}}]");
    let (_, time, _) = parse(&mut parser, text);
    let stamp = jiff::Timestamp::from_nanosecond(i128::from(time)).unwrap();
    let berlin = stamp.to_zoned_datetime(TimeZone::get("Europe/Berlin").unwrap());
    assert_eq!(
        (berlin.month(), berlin.day(), berlin.hour(), berlin.minute()),
        (3, 3, 9, 1)
    );
}

#[test]
fn auth_log_sudo_line_gives_the_invoking_user_and_the_command() {
    let mut parser = line_parser(AUTH);
    let text = "2024-05-01T10:20:00.000000+00:00 db-1 sudo:   alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/systemctl restart postgresql";
    let (fields, _, _) = parse(&mut parser, text);
    assert_eq!(field(&fields, "user.name"), Some("alice"));
    assert_eq!(field(&fields, "user.effective.name"), Some("root"));
    assert_eq!(
        field(&fields, "process.command_line"),
        Some("/usr/bin/systemctl restart postgresql")
    );
    assert_eq!(
        field(&fields, "process.working_directory"),
        Some("/home/alice")
    );
    assert_eq!(field(&fields, "event.action"), Some("sudo"));
}

#[test]
fn auth_log_useradd_and_usermod_lines_name_user_and_group() {
    let mut parser = line_parser(AUTH);
    let (fields, _, _) = parse(
        &mut parser,
        "2024-05-01T11:00:00.000000+00:00 db-1 useradd[4242]: new user: name=mallory, UID=1002, GID=1002, home=/home/mallory, shell=/bin/bash, from=/dev/pts/1",
    );
    assert_eq!(field(&fields, "user.name"), Some("mallory"));
    assert_eq!(field(&fields, "user.id"), Some("1002"));
    assert_eq!(field(&fields, "event.action"), Some("user-created"));
    let (fields, _, _) = parse(
        &mut parser,
        "2024-05-01T11:00:05.000000+00:00 db-1 usermod[4250]: add 'mallory' to group 'sudo'",
    );
    assert_eq!(field(&fields, "user.name"), Some("mallory"));
    assert_eq!(field(&fields, "group.name"), Some("sudo"));
}

#[test]
fn auth_log_other_lines_keep_the_syslog_fields_without_failure() {
    let mut parser = line_parser(AUTH);
    let (fields, _, _) = parse(
        &mut parser,
        "2024-05-01T11:00:00.000000+00:00 db-1 systemd-logind[612]: New session 42 of user alice.",
    );
    assert_eq!(field(&fields, "process.name"), Some("systemd-logind"));
    assert_eq!(field(&fields, PARSE_FAILURE_FIELD), None);
}

#[test]
fn nginx_access_line_gives_http_fields_and_its_own_time() {
    let mut parser = line_parser("{preset: nginx_access}");
    let text = r#"192.0.2.10 - bob [10/Oct/2023:13:55:36 +0200] "GET /api/items?page=2 HTTP/1.1" 404 153 "https://example.com/" "curl/8.4.0""#;
    let (fields, time, _) = parse(&mut parser, text);
    assert_eq!(field(&fields, "source.ip"), Some("192.0.2.10"));
    assert_eq!(field(&fields, "user.name"), Some("bob"));
    assert_eq!(field(&fields, "http.request.method"), Some("GET"));
    assert_eq!(field(&fields, "url.path"), Some("/api/items"));
    assert_eq!(field(&fields, "url.query"), Some("page=2"));
    assert_eq!(field(&fields, "http.response.status_code"), Some("404"));
    assert_eq!(field(&fields, "user_agent.original"), Some("curl/8.4.0"));
    assert_eq!(time, nanos("2023-10-10T11:55:36Z"));
}

#[test]
fn apache_error_line_gives_level_pid_and_time() {
    let mut parser = line_parser("{preset: apache_error}");
    let text = "[Wed Oct 11 14:32:52.123456 2023] [core:error] [pid 35708:tid 4328636416] [client 72.15.99.187:50000] AH00037: Symbolic link not allowed";
    let (fields, time, _) = parse(&mut parser, text);
    assert_eq!(field(&fields, "log.level"), Some("error"));
    assert_eq!(field(&fields, "process.pid"), Some("35708"));
    assert_ne!(time, 7, "the line's own time");
    assert_eq!(field(&fields, PARSE_FAILURE_FIELD), None);
}

#[test]
fn nginx_error_line_gives_level_and_message() {
    let mut parser = line_parser("{preset: nginx_error}");
    let text = r#"2023/10/10 13:55:36 [error] 1234#1234: *5 open() "/usr/share/nginx/html/x" failed (2: No such file or directory), client: 192.0.2.10, server: localhost, request: "GET /x HTTP/1.1", host: "localhost""#;
    let (fields, _, _) = parse(&mut parser, text);
    assert_eq!(field(&fields, "log.level"), Some("error"));
    assert_eq!(field(&fields, "source.ip"), Some("192.0.2.10"));
    assert_eq!(field(&fields, PARSE_FAILURE_FIELD), None);
}

#[test]
fn json_preset_maps_keys_to_ecs_names_and_takes_the_time() {
    let mut parser = line_parser("{preset: json}");
    let text = r#"{"time":"2024-05-01T10:00:00.5Z","level":"WARN","msg":"slow query","user":"alice","pid":311,"http":{"request":{"method":"POST"}},"remote_addr":"not-an-ip","tags":["a","b"]}"#;
    let (fields, time, message) = parse(&mut parser, text);
    assert_eq!(time, nanos("2024-05-01T10:00:00.5Z"));
    assert_eq!(field(&fields, "log.level"), Some("warn"));
    assert_eq!(field(&fields, "user.name"), Some("alice"));
    assert_eq!(field(&fields, "process.pid"), Some("311"));
    assert_eq!(field(&fields, "http.request.method"), Some("POST"));
    assert_eq!(
        field(&fields, "remote_addr"),
        Some("not-an-ip"),
        "not an IP: keeps its key"
    );
    assert_eq!(field(&fields, "tags"), Some(r#"["a","b"]"#));
    assert_eq!(message, text);
}

#[test]
fn json_message_field_becomes_the_message() {
    let mut parser = line_parser("[{json: {message_field: msg}}]");
    let (fields, _, message) = parse(&mut parser, r#"{"msg":"disk \"full\"","service":"api"}"#);
    assert_eq!(message, r#"disk "full""#);
    assert_eq!(field(&fields, "service.name"), Some("api"));
}

#[test]
fn logfmt_and_level_map() {
    let mut parser = line_parser("[{logfmt: {}}, {level: {field: lvl, map: {W: warning}}}]");
    let (fields, _, _) = parse(
        &mut parser,
        r#"ts=1714557600 lvl=W msg="cache \"miss\"" trace_id=abc"#,
    );
    assert_eq!(field(&fields, "log.level"), Some("warning"));
    assert_eq!(field(&fields, "msg"), Some(r#"cache "miss""#));
    assert_eq!(field(&fields, "trace.id"), Some("abc"));
}

#[test]
fn timestamp_layouts_epoch_and_zone() {
    let mut parser = line_parser("[{logfmt: {}}, {timestamp: {field: ts, layouts: [epoch]}}]");
    assert_eq!(
        parse(&mut parser, "ts=1714557600123 a=b").1,
        1_714_557_600_123_000_000
    );
    let mut parser = line_parser(
        "[{logfmt: {}}, {timestamp: {field: ts, layouts: ['%Y-%m-%d %H:%M:%S'], timezone: Asia/Tokyo}}]",
    );
    assert_eq!(
        parse(&mut parser, r#"ts="2024-05-01 09:00:00" a=b"#).1,
        nanos("2024-05-01T00:00:00Z")
    );
    let mut parser = line_parser("[{json: {}}, {timestamp: {field: t, timezone: UTC}}]");
    assert_eq!(
        parse(&mut parser, r#"{"t":"2024-05-01 09:00:00,250"}"#).1,
        nanos("2024-05-01T09:00:00.25Z")
    );
}

#[test]
fn a_line_that_fails_ships_unchanged_flagged_and_counted() {
    let mut parser = line_parser("[{json: {}}]");
    let text = "plain text, not JSON";
    let (fields, time, message) = parse(&mut parser, text);
    assert_eq!(message, text);
    assert_eq!(time, 7, "read time stays the event time");
    assert_eq!(
        fields,
        [(PARSE_FAILURE_FIELD.to_owned(), "json".to_owned())]
    );
    assert_eq!(parser.chain.failures[0].get(), 1);
    parse(&mut parser, "{broken");
    assert_eq!(parser.chain.failures[0].get(), 2);
    assert!(
        parser.failures_not_logged >= 1,
        "the second failure within a minute is not logged"
    );
}

#[test]
fn cri_partial_lines_are_joined_up_to_the_final_one() {
    let mut parser = line_parser("[{cri: {}}, {json: {}}]");
    let first = r#"2024-05-01T10:00:00.000000001Z stdout P {"level":"info","#;
    let second = r#"2024-05-01T10:00:00.000000002Z stdout P "user":"al"#;
    let last = r#"2024-05-01T10:00:00.000000003Z stdout F ice"}"#;
    assert!(parser.parse(line(first, 100)).is_none());
    let second_offset = 100 + first.len() as u64 + 1;
    assert!(parser.parse(line(second, second_offset)).is_none());
    let last_offset = second_offset + second.len() as u64 + 1;
    let joined = parser.parse(line(last, last_offset)).unwrap();
    assert_eq!(joined.message, br#"{"level":"info","user":"alice"}"#);
    assert_eq!(joined.offset, 100);
    assert_eq!(
        joined.offset + joined.length,
        last_offset + last.len() as u64 + 1
    );
    assert_eq!(
        joined.event_unix_nano,
        nanos("2024-05-01T10:00:00.000000001Z")
    );
    let fields: Vec<_> = joined.fields.iter().collect();
    assert!(fields.contains(&("user.name", "alice")));
    assert!(fields.contains(&("log.iostream", "stdout")));
}

#[test]
fn docker_json_file_lines_lose_their_envelope() {
    let mut parser = line_parser("[{docker: {}}]");
    let (fields, time, message) = parse(
        &mut parser,
        r#"{"log":"GET /health 200\n","stream":"stderr","time":"2024-05-01T10:00:00.5Z"}"#,
    );
    assert_eq!(message, "GET /health 200");
    assert_eq!(field(&fields, "log.iostream"), Some("stderr"));
    assert_eq!(time, nanos("2024-05-01T10:00:00.5Z"));
}

#[test]
fn every_preset_compiles() {
    for preset in [
        "syslog",
        "auth_log",
        "nginx_access",
        "nginx_error",
        "apache_access",
        "apache_error",
        "json",
    ] {
        chain(&format!("{{preset: {preset}}}"));
    }
}

#[test]
fn bad_settings_name_the_step_field() {
    let invalid = |yaml: &str| validate(&serde_saphyr::from_str(yaml).unwrap()).unwrap_err();
    assert_eq!(
        invalid("[{json: {}}, {regex: {patterns: ['(?P<a>[']}}]").field,
        "[1].regex.patterns[0]"
    );
    assert_eq!(
        invalid("[{timestamp: {field: t, timezone: Mars/Olympus}}]").field,
        "[0].timestamp.timezone"
    );
    let layout = invalid("[{timestamp: {field: t, layouts: ['%Y-%m-%']}}]");
    assert_eq!(layout.field, "[0].timestamp.layouts[0]");
    assert!(layout.problem.contains("strftime"), "{}", layout.problem);
    assert_eq!(invalid("[{json: {}}, {cri: {}}]").field, "[1].cri");
}

const POD_LOG: &str = "/var/log/pods/shop_checkout-7d9f8c-x2x4q_5c0e7a4e/server/0.log";

fn pod_log_parser(path: &str) -> LineParser {
    LineParser::new(
        chain("preset: kubernetes"),
        std::path::Path::new(path),
        64 * 1024,
    )
}

#[test]
fn the_kubernetes_preset_reads_cri_and_json_file_lines_and_names_the_pod() {
    let mut parser = pod_log_parser(POD_LOG);
    let (fields, time, message) = parse(
        &mut parser,
        r#"2026-12-07T10:00:00.5Z stderr F {"level":"error","msg":"boom"}"#,
    );
    assert_eq!(message, r#"{"level":"error","msg":"boom"}"#);
    assert_eq!(time, nanos("2026-12-07T10:00:00.5Z"));
    assert_eq!(field(&fields, "kubernetes.namespace"), Some("shop"));
    assert_eq!(
        field(&fields, "kubernetes.pod.name"),
        Some("checkout-7d9f8c-x2x4q")
    );
    assert_eq!(field(&fields, "kubernetes.container.name"), Some("server"));
    assert_eq!(field(&fields, "log.iostream"), Some("stderr"));

    let (fields, _, message) = parse(
        &mut parser,
        r#"{"log":"started\n","stream":"stdout","time":"2026-12-07T10:00:01Z"}"#,
    );
    assert_eq!(message, "started");
    assert_eq!(field(&fields, "kubernetes.pod.uid"), Some("5c0e7a4e"));
    assert_eq!(field(&fields, "log.iostream"), Some("stdout"));
}

#[test]
fn a_pod_log_line_the_runtime_format_does_not_fit_still_names_its_pod() {
    let mut parser = pod_log_parser(POD_LOG);
    let (fields, _, message) = parse(&mut parser, "not a container runtime line");
    assert_eq!(message, "not a container runtime line");
    assert_eq!(field(&fields, PARSE_FAILURE_FIELD), Some("container"));
    assert_eq!(
        field(&fields, "kubernetes.pod.name"),
        Some("checkout-7d9f8c-x2x4q")
    );
}

#[test]
fn a_file_that_is_no_pod_log_is_flagged_by_the_kubernetes_step() {
    let mut parser = pod_log_parser("/var/log/app/server.log");
    let (fields, _, _) = parse(&mut parser, "2026-12-07T10:00:00Z stdout F hello");
    assert_eq!(field(&fields, PARSE_FAILURE_FIELD), Some("kubernetes"));
}

#[test]
fn a_line_keeps_as_many_fields_as_the_wire_allows_and_still_fits_its_failure_flag() {
    use vigil_proto::limits::{
        MAX_LOG_FIELD_NAME_BYTES, MAX_LOG_FIELD_VALUE_BYTES, MAX_LOG_FIELDS,
    };
    let keys: Vec<String> = (0..MAX_LOG_FIELDS + 500)
        .map(|key| format!("\"k{key}\":\"v\""))
        .collect();
    let text = format!("{{\"time\":\"soon\",{}}}", keys.join(","));
    let mut parser = line_parser("[{json: {}}]");
    let (fields, _, message) = parse(&mut parser, &text);
    assert_eq!(fields.len(), MAX_LOG_FIELDS - 1);
    assert_eq!(message, text, "the line itself ships whole");

    let mut failing = line_parser("[{json: {}}, {timestamp: {field: time}}]");
    let (fields, _, _) = parse(&mut failing, &text);
    assert_eq!(fields.len(), MAX_LOG_FIELDS);
    assert_eq!(field(&fields, PARSE_FAILURE_FIELD), Some("timestamp"));

    let long_name = "n".repeat(MAX_LOG_FIELD_NAME_BYTES + 1);
    let long_value = "é".repeat(MAX_LOG_FIELD_VALUE_BYTES);
    let text = format!("{{\"{long_name}\":\"x\",\"user\":\"{long_value}\"}}");
    let (fields, _, _) = parse(&mut line_parser("[{json: {}}]"), &text);
    assert_eq!(field(&fields, &long_name), None);
    let user = field(&fields, "user.name").unwrap();
    assert_eq!(
        user.len(),
        MAX_LOG_FIELD_VALUE_BYTES,
        "cut on a character boundary"
    );
}
