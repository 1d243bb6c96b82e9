//! Idempotency log: `syncguard.idempotency_keys` and the claim / complete /
//! fail protocol, defined in `sql/idempotency.sql`.
