//! Generates `include/strata.h` from the crate's exported functions with
//! cbindgen (settings in `cbindgen.toml`). The file is rewritten only
//! when its content changes, so a build never makes the next one stale.

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=build.rs");
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml"))
        .unwrap_or_else(|e| panic!("capi/cbindgen.toml: {e}"));
    let bindings = cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
        .unwrap_or_else(|e| panic!("generating strata.h: {e}"));
    // `write_to_file` compares with the file first and leaves an
    // unchanged header alone (its mtime too).
    bindings.write_to_file(dir.join("include/strata.h"));
}
