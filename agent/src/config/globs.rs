//! Include and exclude globs of the configuration, compiled once when a collector
//! is built: they choose the disks, interfaces, mount points and cgroups whose
//! samples the host and container collectors put into their batches.

use super::InvalidConfig;

/// A compiled pair of include and exclude globs: a name is selected when it
/// matches an include glob (or there are none) and no exclude glob.
#[derive(Debug, Clone)]
pub(crate) struct NameMatcher {
    include: Vec<glob::Pattern>,
    exclude: Vec<glob::Pattern>,
}

impl NameMatcher {
    /// Compiles the globs of `<field>.include` and `<field>.exclude`.
    pub(super) fn new(
        include: &[String],
        exclude: &[String],
        field: &str,
    ) -> Result<Self, InvalidConfig> {
        Ok(Self {
            include: compile_globs(include, &format!("{field}.include"))?,
            exclude: compile_globs(exclude, &format!("{field}.exclude"))?,
        })
    }

    pub(crate) fn selects(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|glob| glob.matches(name)))
            && !self.exclude.iter().any(|glob| glob.matches(name))
    }
}

/// Compiles `patterns`; an error names `field[index]`.
pub(super) fn compile_globs(
    patterns: &[String],
    field: &str,
) -> Result<Vec<glob::Pattern>, InvalidConfig> {
    patterns
        .iter()
        .enumerate()
        .map(|(index, pattern)| {
            glob::Pattern::new(pattern).map_err(|error| {
                InvalidConfig::field(
                    format!("{field}[{index}]"),
                    format!("is not a valid glob: {error}"),
                )
            })
        })
        .collect()
}
