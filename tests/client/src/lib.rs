//! The harness of syncguard's client tests (tests/*.rs of this crate): each
//! test binary uses a different part of it.

pub mod common;
pub mod orm_env;
pub mod profiles;

use std::path::PathBuf;

/// The repository's root, for the files the tests read (docs, scripts,
/// META.json, the frozen install scripts).
pub fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .canonicalize()
        .expect("the repository root")
}

/// Cargo's target directory (`CARGO_TARGET_DIR`, else `target/` at the root),
/// where the tests keep server logs and the ORM environments.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
}
