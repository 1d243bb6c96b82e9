//! The SQL files of the install script and the order they depend on each
//! other, in one place. pgrx writes the install script from these and the
//! Rust functions (`#[pg_extern]`), ordering everything by the `requires`
//! below; a name in quotes is another file here, a bare name a Rust function.
//! The files themselves are plain SQL and plpgsql: every step of the
//! idempotency log, sync runs, queue and invariants is a few indexed
//! statements, where the interpreter costs little next to the index and WAL
//! work, and users audit the functions with `\sf`. The exceptions are
//! `idem_claim` and `idem_complete`, which every request calls: they are C
//! (src/idempotency.rs), declared in the SQL file.

use pgrx::prelude::*;

// What belongs to the schema as a whole: its grant, shared helpers.
extension_sql_file!(
    "../sql/install/schema.sql",
    name = "schema",
    requires = [has_privs_of]
);

// The idempotency log: keys and the claim / complete / fail protocol.
extension_sql_file!(
    "../sql/install/idempotency.sql",
    name = "idempotency",
    requires = ["schema"]
);

// Sync runs with honest watermarks, the retry queue (which retries with the
// idempotency log's backoff_delay) and the health views; the row-level
// security policies call has_privs_of (src/roles.rs).
// Their names are per owner (sql/install/names.sql).
extension_sql_file!("../sql/install/names.sql", name = "names");
extension_sql_file!(
    "../sql/install/sync.sql",
    name = "sync",
    requires = ["names", has_privs_of]
);
extension_sql_file!(
    "../sql/install/queue.sql",
    name = "queue",
    requires = ["idempotency", "names", has_privs_of]
);
extension_sql_file!(
    "../sql/install/health.sql",
    name = "health",
    requires = ["sync", "queue"]
);

// protect() and its views, over the trigger and the merge upsert.
extension_sql_file!(
    "../sql/install/protect.sql",
    name = "protect",
    requires = [
        "protect_trigger",
        protect_config,
        freshness_stamp,
        merge_upsert
    ]
);

// Invariants: the registry and its checks (run in the Rust sandbox), the
// templates, entity events and the periodic housekeeping of every part.
extension_sql_file!(
    "../sql/install/invariants.sql",
    name = "invariants",
    requires = ["names", invariant_check_run, invariant_query_text]
);
extension_sql_file!(
    "../sql/install/invariant_templates.sql",
    name = "invariant_templates",
    requires = ["invariants"]
);
extension_sql_file!("../sql/install/entity_events.sql", name = "entity_events");
extension_sql_file!(
    "../sql/install/housekeeping.sql",
    name = "housekeeping",
    requires = ["idempotency", "protect", "invariants", "sync"]
);

// Reconciliation (docs/reconcile.md): SQL that postgres_fdw can send to
// the remote server, which computes the checksums.
extension_sql_file!(
    "../sql/install/reconcile.sql",
    name = "reconcile",
    requires = ["protect", "invariant_templates", jsonb_merge_diff]
);

// Scale-out on Citus (docs/citus.md): plpgsql that reaches Citus through
// EXECUTE, so the extension installs and works without Citus.
extension_sql_file!(
    "../sql/install/citus.sql",
    name = "citus",
    requires = ["idempotency", "protect", "health", "housekeeping"]
);
