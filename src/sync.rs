//! Sync runs with honest watermarks, the retry queue and the sync-health
//! views: `sql/sync.sql`, `sql/queue.sql` and `sql/health.sql`.
//!
//! Like the idempotency log, these are plain SQL and plpgsql: every step is a
//! few indexed statements, where the interpreter costs little next to the
//! index and WAL work, and users audit the functions with `\sf`. The queue
//! retries with the idempotency log's `backoff_delay`, hence its `requires`;
//! the policies of both call `syncguard.has_privs_of` (src/roles.rs).

// Named in `requires` below: only the SQL generator reads it.
#[allow(unused_imports)]
use crate::roles::has_privs_of;

pgrx::extension_sql_file!("../sql/sync.sql", name = "sync", requires = [has_privs_of]);
pgrx::extension_sql_file!(
    "../sql/queue.sql",
    name = "queue",
    requires = ["idempotency", has_privs_of]
);
pgrx::extension_sql_file!(
    "../sql/health.sql",
    name = "health",
    requires = ["sync", "queue"]
);
