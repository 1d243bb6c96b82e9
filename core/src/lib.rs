//! syncguard's pure-Rust core, the jsonb merge engine: a crate without
//! pgrx, so no PostgreSQL is needed to build, run or test it.
//!
//! `jsonb` reads and writes PostgreSQL's binary jsonb format, `numeric`
//! compares numerics in their stored form, `row_hash` hashes rows for
//! reconciliation, `text` converts JSON text to and
//! from the binary form (tests, fuzzing), `policy` parses merge policies and
//! `engine` implements the merges.

pub mod engine;
pub mod jsonb;
pub mod numeric;
pub mod policy;
pub mod row_hash;
pub mod text;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod props;
