//! Scale-out on Citus (docs/citus.md): `syncguard.distribute()`,
//! `syncguard.undistribute()` and `syncguard.cluster_conflict_stats()`, in
//! `sql/citus.sql`. Plain plpgsql that reaches Citus through EXECUTE, so the
//! extension installs and works without Citus; no Rust function.

pgrx::extension_sql_file!(
    "../sql/citus.sql",
    name = "citus",
    requires = ["idempotency", "protect", "health", "housekeeping"]
);
