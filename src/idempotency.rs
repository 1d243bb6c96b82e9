//! Idempotency log: `syncguard.idempotency_keys` and the claim / complete /
//! fail protocol, defined in `sql/idempotency.sql`.
//!
//! The protocol is plain SQL and plpgsql: every step is one or two indexed
//! statements on one table, where the interpreter costs little next to the
//! index and WAL work, and plpgsql keeps the functions readable for the users
//! who audit them with `\sf`. It needs no Rust function, so the file has no
//! `requires`.

pgrx::extension_sql_file!("../sql/idempotency.sql", name = "idempotency");
