//! Build step of the agent binary: hands `link-order.txt` (written by
//! `packaging/link-order.sh`) to the linker, so that the functions the agent runs at
//! start, at rest and while shipping sit side by side and keep few pages resident.

use std::env;
use std::path::Path;

fn main() {
    let list =
        Path::new(&env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("link-order.txt");
    println!("cargo:rerun-if-changed={}", list.display());
    // rustc links x86_64-unknown-linux-gnu with its own lld, which reads a symbol
    // ordering file; other targets' default linkers may not know the option.
    let lld_by_default = env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64")
        && env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if lld_by_default && list.is_file() {
        println!(
            "cargo:rustc-link-arg-bin=vigil-agent=-Wl,--symbol-ordering-file={}",
            list.display()
        );
        // Names the build does not have (another profile, an older toolchain) are
        // left out without a warning per name.
        println!("cargo:rustc-link-arg-bin=vigil-agent=-Wl,--no-warn-symbol-ordering");
    }
}
