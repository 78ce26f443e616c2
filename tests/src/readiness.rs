//! What a Vigil process says about itself on `/ready`, and a config file that
//! gives each aggregator stage its own endpoint address.

use std::path::Path;
use std::time::Duration;

use crate::wait_until;

/// The status and body of `/ready` on `http_port`; `None` while nothing answers.
pub fn readiness(http_port: u16) -> Option<(u16, String)> {
    let response = reqwest::blocking::get(format!("http://127.0.0.1:{http_port}/ready")).ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().unwrap_or_default()))
}

/// Waits until `/ready` on `http_port` answers `status` with a body containing
/// `fragment`; returns the body.
pub fn wait_for_readiness(
    http_port: u16,
    status: u16,
    fragment: &str,
    deadline: Duration,
) -> String {
    wait_until(
        &format!("/ready on port {http_port} to answer {status} with `{fragment}`"),
        deadline,
        || {
            readiness(http_port).and_then(|(answered, body)| {
                (answered == status && body.contains(fragment)).then_some(body)
            })
        },
    )
}

/// Rewrites the aggregator config at `path` so that `derive`, `alert` and
/// `index` each listen on their own port of 127.0.0.1 (in that order) besides
/// the file's top-level `http.listen`: adds an `http` entry to the `alert` and
/// `index` sections the file has, and a `derive` section with one.
pub fn give_each_stage_its_port(path: &Path, [derive, alert, index]: [u16; 3]) {
    let text = std::fs::read_to_string(path).expect("config readable");
    let listen = |port: u16| format!("  http: {{listen: '127.0.0.1:{port}'}}\n");
    let mut rewritten = String::new();
    for line in text.split_inclusive('\n') {
        rewritten.push_str(line);
        match line.trim_end() {
            "alert:" => rewritten.push_str(&listen(alert)),
            "index:" => rewritten.push_str(&listen(index)),
            _ => {}
        }
    }
    assert_eq!(
        rewritten.matches("  http: {listen").count(),
        2,
        "{} has `alert:` and `index:` sections",
        path.display()
    );
    rewritten.push_str("derive:\n");
    rewritten.push_str(&listen(derive));
    std::fs::write(path, rewritten).expect("config written");
}
