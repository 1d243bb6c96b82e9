//! Reconciliation of a table with another one, typically a `postgres_fdw`
//! foreign table on the source system's server: `reconcile`,
//! `reconcile_apply` and the template `invariant_reconcile`, all plpgsql in
//! `sql/reconcile.sql` (docs/reconcile.md). The checksums must be computed
//! by the remote server, so they are SQL that postgres_fdw can send there,
//! which is why this part is not Rust.
use pgrx::prelude::*;

extension_sql_file!(
    "../sql/reconcile.sql",
    name = "reconcile",
    requires = ["protect", "invariant_templates", jsonb_merge_diff]
);
