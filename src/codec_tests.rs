//! In-server checks that the pure-Rust jsonb codec agrees with PostgreSQL's own.
