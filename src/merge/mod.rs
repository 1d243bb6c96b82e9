//! Pure-Rust jsonb merge engine (no PostgreSQL needed to test it).
#[cfg(test)]
mod tests { #[test] fn it_links() { assert_eq!(1+1, 2); } }
