//! The Vigil binaries under test.
//!
//! End-to-end tests run the binaries that `cargo build --workspace --bins` put next to
//! the test executable, as an operator would run them, and manage them with
//! [`ChildProcess`].

use std::env;
use std::path::PathBuf;

pub use crate::process::ChildProcess;

/// The path of Vigil binary `name` (e.g. `vigil-agent`) in the current cargo profile.
///
/// Test executables live in `target/<profile>/deps/`, binaries in `target/<profile>/`.
/// Panics if the binary is missing, saying to build it first.
pub fn vigil_binary(name: &str) -> PathBuf {
    let test_executable = env::current_exe()
        .unwrap_or_else(|error| panic!("cannot find the test executable's path: {error}"));
    let mut profile_dir = test_executable
        .parent()
        .unwrap_or_else(|| panic!("{} has no parent directory", test_executable.display()))
        .to_path_buf();
    if profile_dir.ends_with("deps") {
        profile_dir.pop();
    }
    let binary = profile_dir.join(format!("{name}{}", env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "Vigil binary `{name}` not found at {}: run `cargo build --workspace --bins` first \
         (`bash scripts/test.sh` does)",
        binary.display()
    );
    binary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "run `cargo build --workspace --bins` first")]
    fn a_missing_binary_says_how_to_build_it() {
        vigil_binary("vigil-no-such-binary");
    }
}
