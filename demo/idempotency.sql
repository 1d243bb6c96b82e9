-- syncguard walk-through, idempotency keys (included by demo/walkthrough.sql).

\echo
\echo '== Idempotency keys: a retried request is replayed, not re-run =='
CREATE TABLE charges (id serial PRIMARY KEY, customer text, amount numeric);
\echo 'The client sends "charge Ada 42.00" with Idempotency-Key 7f3c. The server claims the key,'
\echo 'charges, and records the response, all in one transaction:'
BEGIN;
SELECT outcome, attempt FROM syncguard.idem_claim('charges', '7f3c', '{"customer": "ada", "amount": 42.00}');
INSERT INTO charges (customer, amount) VALUES ('ada', 42.00);
SELECT syncguard.idem_complete(lease_token, jsonb_build_object('charge_id', currval('charges_id_seq'), 'status', 'paid'))
  FROM syncguard.idempotency_keys WHERE scope = 'charges' AND key = '7f3c' \gset
COMMIT;
\echo 'The response never reached the client (timeout), so it retries with the same key and body'
\echo '(keys in another order, other spacing: the fingerprint is canonical). It gets the stored response:'
SELECT outcome, response, attempt FROM syncguard.idem_claim('charges', '7f3c', '{ "amount":42.00, "customer":"ada" }');
SELECT count(*) AS charges_made FROM charges;
\echo 'The same key with a different request is refused (SQLSTATE SG001):'
\set ON_ERROR_STOP off
SELECT * FROM syncguard.idem_claim('charges', '7f3c', '{"customer": "ada", "amount": 99.00}');
\set ON_ERROR_STOP on

\echo
\echo 'For work outside the database (an e-mail, a remote API), claim with a lease and commit it;'
\echo 'a second worker sees the key in progress until the first completes or its lease expires:'
SELECT outcome, attempt FROM syncguard.idem_claim('emails', 'welcome-ada', '{"to": "ada"}', lease => '1 minute');
SELECT outcome, attempt, retry_at > now() AS retry_later_than_now
  FROM syncguard.idem_claim('emails', 'welcome-ada', '{"to": "ada"}');
\echo 'The mail server times out: a retryable failure schedules the next attempt with backoff:'
SELECT status, attempt, retry_at > now() AS has_retry_time
  FROM syncguard.idem_fail((SELECT lease_token FROM syncguard.idempotency_keys WHERE key = 'welcome-ada'), 'SMTP timeout');
SELECT outcome, response FROM syncguard.idem_claim('emails', 'welcome-ada', '{"to": "ada"}');
\echo 'What the log holds, by scope and status:'
SELECT scope, status, keys, attempts FROM syncguard.idempotency_summary ORDER BY scope, status;
