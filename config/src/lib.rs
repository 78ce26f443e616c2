//! How every Vigil file is read, before any part of the data path sees it:
//! configuration, rule, definition and rule-test files are YAML whose errors name
//! the file, line and column (and the field, for a value that parses but cannot
//! be used), and whose durations are written as in Prometheus (`30s`, `1h30m`).
//!
//! Pure: no I/O beyond reading the file asked for, so the rules engine and every
//! binary can share it.

pub mod duration;
mod file;
mod locate;

pub use file::{ConfigFileError, InvalidSetting, load_yaml, parse_yaml, read_text, setting_place};
pub use locate::{Position, locate, locate_setting_of};
