//! Guards on the wire contract: the checked-in generated code matches the .proto
//! files, and no change to them breaks compatibility with data already on the wire.
//!
//! Regenerate after editing the schema with
//! `VIGIL_REGENERATE=1 cargo test -p vigil-proto --test contract`, which rewrites the
//! generated code and appends new fields to `schema.lock`. It never rewrites an
//! existing lock line: a changed number or type stays a failure.

use prost::Message;
use prost_types::{FileDescriptorSet, field_descriptor_proto::Label, field_descriptor_proto::Type};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn regenerate() -> bool {
    std::env::var_os("VIGIL_REGENERATE").is_some()
}

/// Runs prost-build on the schema into `out`, returning the descriptor set.
fn compile_schema(out: &Path) -> FileDescriptorSet {
    let descriptor_path = out.join("descriptors.bin");
    // protoc comes with the build (protoc-bin-vendored), not from the machine.
    let protoc =
        protoc_bin_vendored::protoc_bin_path().expect("a vendored protoc for this platform");
    prost_build::Config::new()
        .protoc_executable(protoc)
        .out_dir(out)
        .file_descriptor_set_path(&descriptor_path)
        .compile_protos(
            &[crate_dir().join("proto/vigil/v1/vigil.proto")],
            &[crate_dir().join("proto")],
        )
        .expect("protoc compiles the schema");
    FileDescriptorSet::decode(std::fs::read(descriptor_path).unwrap().as_slice()).unwrap()
}

#[test]
fn generated_code_is_fresh() {
    let out = tempfile::tempdir().unwrap();
    compile_schema(out.path());
    let fresh = std::fs::read_to_string(out.path().join("vigil.v1.rs")).unwrap();
    let checked_in_path = crate_dir().join("src/generated/vigil.v1.rs");
    if regenerate() {
        std::fs::write(&checked_in_path, &fresh).unwrap();
    }
    let checked_in = std::fs::read_to_string(&checked_in_path).unwrap_or_default();
    assert!(
        fresh == checked_in,
        "src/generated/vigil.v1.rs is stale; regenerate with VIGIL_REGENERATE=1 cargo test -p vigil-proto --test contract"
    );
}

/// Reserved number ranges (end exclusive) per message or enum.
type Reserved = BTreeMap<String, Vec<(i32, i32)>>;

/// One line of the lock: `message.field = number type label`, or `enum.VALUE = number`.
fn describe(set: &FileDescriptorSet) -> (Vec<String>, Reserved) {
    let mut lines = Vec::new();
    let mut reserved = BTreeMap::new();
    for file in &set.file {
        let package = file.package();
        for message in &file.message_type {
            let full = format!("{package}.{}", message.name());
            for field in &message.field {
                let ty = match field.r#type() {
                    Type::Message | Type::Enum => {
                        field.type_name().trim_start_matches('.').to_owned()
                    }
                    other => format!("{other:?}").to_lowercase(),
                };
                let label = if field.label() == Label::Repeated {
                    "repeated"
                } else {
                    "single"
                };
                lines.push(format!(
                    "{full}.{} = {} {ty} {label}",
                    field.name(),
                    field.number()
                ));
            }
            reserved.insert(
                full,
                message
                    .reserved_range
                    .iter()
                    .map(|r| (r.start(), r.end()))
                    .collect(),
            );
        }
        for enumeration in &file.enum_type {
            let full = format!("{package}.{}", enumeration.name());
            for value in &enumeration.value {
                lines.push(format!("{full}.{} = {}", value.name(), value.number()));
            }
            reserved.insert(
                full,
                enumeration
                    .reserved_range
                    .iter()
                    .map(|r| (r.start(), r.end() + 1))
                    .collect(),
            );
        }
    }
    (lines, reserved)
}

/// Splits a lock line into (owner, field, number, rest).
fn parse(line: &str) -> (String, String, i32, String) {
    let (path, rhs) = line.split_once(" = ").expect("lock line has ` = `");
    let (owner, field) = path.rsplit_once('.').expect("lock line names owner.field");
    let mut rhs = rhs.splitn(2, ' ');
    let number = rhs.next().unwrap().parse().expect("lock line has a number");
    (
        owner.into(),
        field.into(),
        number,
        rhs.next().unwrap_or("").into(),
    )
}

/// Every incompatibility between what was recorded and what the schema says now.
fn incompatibilities(lock: &[String], current: &[String], reserved: &Reserved) -> Vec<String> {
    let mut problems = Vec::new();
    let current: Vec<_> = current.iter().map(|l| parse(l)).collect();
    let locked: Vec<_> = lock.iter().map(|l| parse(l)).collect();
    for (owner, field, number, rest) in &locked {
        match current.iter().find(|(o, f, ..)| o == owner && f == field) {
            Some((_, _, now_number, now_rest)) => {
                if now_number != number {
                    problems.push(format!(
                        "{owner}.{field} changed its number from {number} to {now_number}"
                    ));
                }
                if now_rest != rest {
                    problems.push(format!(
                        "{owner}.{field} changed its type from `{rest}` to `{now_rest}`"
                    ));
                }
            }
            None => {
                let is_reserved = reserved
                    .get(owner)
                    .is_some_and(|ranges| ranges.iter().any(|(s, e)| (*s..*e).contains(number)));
                if !is_reserved {
                    problems.push(format!(
                        "{owner}.{field} ({number}) was removed without reserving its number"
                    ));
                }
            }
        }
    }
    for (owner, field, number, _) in &current {
        if let Some((_, old_field, ..)) = locked
            .iter()
            .find(|(o, f, n, _)| o == owner && n == number && f != field)
        {
            problems.push(format!(
                "{owner}.{field} reuses number {number}, once used by `{old_field}`"
            ));
        }
    }
    problems
}

#[test]
fn schema_changes_stay_wire_compatible() {
    let out = tempfile::tempdir().unwrap();
    let (current, reserved) = describe(&compile_schema(out.path()));
    let lock_path = crate_dir().join("schema.lock");
    let lock_text = std::fs::read_to_string(&lock_path).unwrap_or_default();
    let mut lock: Vec<String> = lock_text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();

    let problems = incompatibilities(&lock, &current, &reserved);
    assert!(
        problems.is_empty(),
        "incompatible schema change:\n{}",
        problems.join("\n")
    );

    let unrecorded: Vec<&String> = current
        .iter()
        .filter(|line| {
            let (owner, field, ..) = parse(line);
            !lock.iter().any(|l| {
                let (o, f, ..) = parse(l);
                o == owner && f == field
            })
        })
        .collect();
    if regenerate() && !unrecorded.is_empty() {
        lock.extend(unrecorded.iter().map(|l| l.to_string()));
        let header = "# Every field and enum value ever released. Lines are only ever appended.\n";
        std::fs::write(&lock_path, format!("{header}{}\n", lock.join("\n"))).unwrap();
        return;
    }
    assert!(
        unrecorded.is_empty(),
        "new fields are not recorded in schema.lock (VIGIL_REGENERATE=1 appends them):\n{}",
        unrecorded
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn a_reused_field_number_is_caught() {
    let lock = vec!["vigil.v1.Sample.unit = 8 string single".to_owned()];
    let current = vec!["vigil.v1.Sample.units = 8 string single".to_owned()];
    let problems = incompatibilities(&lock, &current, &BTreeMap::new());
    assert_eq!(
        problems,
        [
            "vigil.v1.Sample.unit (8) was removed without reserving its number",
            "vigil.v1.Sample.units reuses number 8, once used by `unit`"
        ]
    );
}

#[test]
fn a_changed_field_type_is_caught() {
    let lock = vec!["vigil.v1.Sample.counter = 5 uint64 single".to_owned()];
    let current = vec!["vigil.v1.Sample.counter = 5 double single".to_owned()];
    let problems = incompatibilities(&lock, &current, &BTreeMap::new());
    assert_eq!(
        problems,
        ["vigil.v1.Sample.counter changed its type from `uint64 single` to `double single`"]
    );
}

#[test]
fn a_removed_field_with_a_reserved_number_is_accepted() {
    let lock = vec!["vigil.v1.Sample.unit = 8 string single".to_owned()];
    let reserved = BTreeMap::from([("vigil.v1.Sample".to_owned(), vec![(8, 9)])]);
    assert!(incompatibilities(&lock, &[], &reserved).is_empty());
}
