//! Running `vigil-aggregator setup` from the tests: installing a deployment's
//! index templates, and where the repository's dashboards are.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::vigil_binary;

/// Runs `vigil-aggregator setup --config <config>` with `args`.
pub fn run_setup(config: &Path, args: &[&str]) -> Output {
    Command::new(vigil_binary("vigil-aggregator"))
        .arg("setup")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("vigil-aggregator setup runs")
}

/// Installs the templates for the indices of `config` (the test server has no
/// lifecycle policies or data streams, so they are skipped); returns the output.
pub fn install_templates(config: &Path) -> String {
    let output = run_setup(config, &["--skip-unsupported", "--skip-kibana"]);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "setup failed:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The repository's `dashboards/` folder.
pub fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}
