-- syncguard walk-through, merge upserts and protection (included by demo/walkthrough.sql).

\echo
\echo '== 6. The incident, and a table that prevents it without code changes =='
CREATE TABLE customers (id int PRIMARY KEY, name text, email text, external_data jsonb, synced_at timestamptz);
INSERT INTO customers VALUES (1, 'Ada', 'ada@example.com',
  '{"contact": {"phone": "555-0100"}, "billing": {"plan": "pro", "card": "visa-4242"}, "prefs": {"lang": "en"}}',
  '2026-11-01T10:00:00Z');
\echo 'The nightly sync fetches each customer in three calls: contact, billing, prefs.'
\echo 'Tonight the billing call timed out. The job does what most jobs do: it saves what it got.'
\set payload '{"contact": {"phone": "555-0199"}, "prefs": {"lang": "en", "tz": "UTC"}}'
BEGIN;
UPDATE customers SET external_data = :'payload', email = NULL WHERE id = 1;
\echo 'Without protection, billing and the email are gone:'
SELECT name, email, jsonb_pretty(external_data) AS external_data FROM customers;
ROLLBACK;

\echo 'Protect the table once. The application keeps running exactly the same UPDATE:'
SELECT syncguard.protect('customers');
UPDATE customers SET external_data = :'payload', email = NULL WHERE id = 1;
SELECT name, email, jsonb_pretty(external_data) AS external_data FROM customers;
\echo 'Every field survived; the fetched ones are updated. INSERT ... ON CONFLICT DO UPDATE and'
\echo 'ORM saves go through the same trigger. The list of protected tables:'
SELECT * FROM syncguard.protected_tables;

\echo
\echo '== 7. Deleting on purpose, and merge_upsert =='
\echo 'A merge never deletes. The tombstone {"$delete": true} removes one key on purpose:'
UPDATE customers SET external_data = '{"prefs": {"tz": {"$delete": true}}}' WHERE id = 1
RETURNING external_data -> 'prefs' AS prefs;
\echo 'A real replace is one SET LOCAL away:'
BEGIN;
SET LOCAL syncguard.bypass_protection = on;
UPDATE customers SET external_data = '{"migrated": true}' WHERE id = 1 RETURNING external_data;
ROLLBACK;
\echo 'merge_upsert is the same merge as one call, for jobs that do not have the row yet:'
SELECT jsonb_pretty(syncguard.merge_upsert('customers', '{"id": 2}',
         '{"name": "Bob", "external_data": {"billing": {"plan": "free"}}}')) AS inserted;
SELECT jsonb_pretty(syncguard.merge_upsert('customers', '{"id": 2}',
         '{"name": null, "external_data": {"contact": {"phone": "555-0123"}}}')) AS merged;

\echo
\echo '== 8. Out-of-order deliveries: last write wins on a timestamp =='
SELECT syncguard.protect('customers', NULL, '{"last_write_wins": "synced_at"}');
\echo 'A retried sync from yesterday arrives after today''s. It is ignored, and counted:'
UPDATE customers SET synced_at = '2026-10-31T00:00:00Z', external_data = '{"billing": {"plan": "old"}}' WHERE id = 1;
SELECT external_data -> 'billing' ->> 'plan' AS plan, synced_at FROM customers WHERE id = 1;
SELECT * FROM syncguard.conflict_stats;
\echo 'A timestamp from a writer whose clock runs an hour fast is refused (SQLSTATE SG004):'
\set ON_ERROR_STOP off
UPDATE customers SET synced_at = now() + interval '1 hour' WHERE id = 1;
\set ON_ERROR_STOP on
