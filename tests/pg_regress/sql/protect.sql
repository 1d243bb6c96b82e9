-- protect / unprotect: the trigger's merge, NULL keeping, bypass,
-- tombstones, conflict policies, the view, ownership and errors.

CREATE TABLE p_profiles (id int PRIMARY KEY, name text, email text, external_data jsonb, note text);
INSERT INTO p_profiles VALUES
    (1, 'Ada', 'ada@example.com', '{"contact": {"email": "ada@example.com"}, "billing": {"plan": "pro", "card": "visa"}, "tags": [1, 2]}', 'vip');

-- Unprotected: the application's full-replace write loses billing and the name.
BEGIN;
UPDATE p_profiles SET name = NULL, external_data = '{"contact": {"email": "ada@new.example.com"}}' WHERE id = 1;
SELECT name, external_data FROM p_profiles;
ROLLBACK;

SELECT syncguard.protect('p_profiles');
SELECT syncguard.protect('p_profiles');  -- idempotent
SELECT table_name, columns, policy FROM syncguard.protected_tables;

-- The same write, protected: billing survives, contact is updated, the name stays.
UPDATE p_profiles SET name = NULL, external_data = '{"contact": {"email": "ada@new.example.com"}}' WHERE id = 1;
SELECT name, external_data FROM p_profiles;
-- INSERT … ON CONFLICT DO UPDATE goes through the same trigger.
INSERT INTO p_profiles (id, name, external_data) VALUES (1, NULL, '{"contact": {"phone": "+44"}}')
ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, external_data = EXCLUDED.external_data
RETURNING name, external_data;
-- An UPDATE that leaves the column alone does not touch it (arrays are not doubled).
SELECT syncguard.protect('p_profiles', NULL, '{"arrays": "concat"}');
UPDATE p_profiles SET note = 'vvip' WHERE id = 1 RETURNING note, external_data -> 'tags' AS tags;
UPDATE p_profiles SET external_data = '{"tags": [3]}' WHERE id = 1 RETURNING external_data -> 'tags' AS tags;

-- Deliberate deletes: a tombstone removes a key; bypass replaces whole.
UPDATE p_profiles SET external_data = jsonb_build_object('billing', jsonb_build_object('card', syncguard.tombstone())) WHERE id = 1
RETURNING external_data -> 'billing' AS billing;
BEGIN;
SET LOCAL syncguard.bypass_protection = on;
UPDATE p_profiles SET note = NULL, external_data = '{"only": true}' WHERE id = 1 RETURNING note, external_data;
ROLLBACK;
UPDATE p_profiles SET external_data = syncguard.tombstone() WHERE id = 1 RETURNING external_data;
UPDATE p_profiles SET external_data = '{"p_fresh": {"$delete": true}, "start": 1}' WHERE id = 1 RETURNING external_data;

-- Only the listed columns are protected.
SELECT syncguard.protect('p_profiles', '{external_data}');
UPDATE p_profiles SET note = NULL, name = NULL, external_data = '{"more": 2}' WHERE id = 1 RETURNING name, note, external_data;
SELECT table_name, columns FROM syncguard.protected_tables;

-- Per-path rules: remote inventory replaces, the local price is kept.
UPDATE p_profiles SET name = 'Ada' WHERE id = 1;
SELECT syncguard.protect('p_profiles', '{external_data}', '{"paths": {"inventory": "replace", "price": "keep"}}');
UPDATE p_profiles SET external_data = '{"inventory": {"a": 1, "b": 2}, "price": 10}' WHERE id = 1;
UPDATE p_profiles SET external_data = '{"inventory": {"c": 3}, "price": 99}' WHERE id = 1 RETURNING external_data;

-- merge_upsert on a protected table uses its policy and merges once.
SELECT syncguard.merge_upsert('p_profiles', '{"id": 1}', '{"external_data": {"inventory": {"d": 4}, "price": 1}}') -> 'external_data';

-- last_write_wins: an older row is ignored and counted; a future one is rejected.
CREATE TABLE p_items (sku text PRIMARY KEY, qty int, synced_at timestamptz);
INSERT INTO p_items VALUES ('a', 5, '2026-01-02T00:00:00Z');
SELECT syncguard.protect('p_items', NULL, '{"last_write_wins": "synced_at"}');
UPDATE p_items SET qty = 4, synced_at = '2026-01-01T00:00:00Z' WHERE sku = 'a';
UPDATE p_items SET qty = 6, synced_at = '2026-01-03T00:00:00Z' WHERE sku = 'a';
UPDATE p_items SET qty = 7 WHERE sku = 'a';
SELECT qty, synced_at FROM p_items;
SELECT table_name, stale_ignored FROM syncguard.conflict_stats WHERE table_name = 'public.p_items';
SELECT regexp_replace(regress.err($$UPDATE p_items SET qty = 0, synced_at = clock_timestamp() + interval '1 hour'$$),
                      '[0-9.]+ s ahead|detail: .* \|', 'X', 'g');
SELECT qty FROM p_items;

-- version: exactly the writer with a newer version gets through.
CREATE TABLE p_docs (id int PRIMARY KEY, v bigint NOT NULL, body jsonb);
INSERT INTO p_docs VALUES (1, 1, '{"a": 1}');
SELECT syncguard.protect('p_docs', NULL, '{"version": "v"}');
UPDATE p_docs SET v = 2, body = '{"b": 2}' WHERE id = 1;
SELECT regress.err($$UPDATE p_docs SET v = 2, body = '{"c": 3}' WHERE id = 1$$);
SELECT regress.err($$UPDATE p_docs SET body = '{"c": 3}' WHERE id = 1$$);
SELECT * FROM p_docs;

-- freshness through the trigger.
CREATE TABLE p_fresh (id int PRIMARY KEY, data jsonb, seen jsonb);
INSERT INTO p_fresh VALUES (1, '{"a": 1}', '{"a": "2000-01-01T00:00:00+00:00"}');
SELECT syncguard.protect('p_fresh', NULL, '{"freshness": {"data": "seen"}}');
BEGIN;
UPDATE p_fresh SET data = '{"b": 2}' WHERE id = 1;
SELECT data, seen ->> 'a' AS a_seen, (seen ->> 'b')::timestamptz = now() AS b_seen_now FROM p_fresh;
COMMIT;

-- Configuration errors, checked before anything changes.
SELECT regress.err($$SELECT syncguard.protect('p_profiles', '{nope}')$$);
SELECT regress.err($$SELECT syncguard.protect('p_profiles', '{name,NULL}')$$);
SELECT regress.err($$SELECT syncguard.protect('p_profiles', NULL, '{"nulls": "maybe"}')$$);
SELECT regress.err($$SELECT syncguard.protect('p_profiles', NULL, '{"last_write_wins": "name"}')$$);
SELECT regress.err($$SELECT syncguard.protect('no_such_table')$$);
CREATE VIEW v_profiles AS SELECT * FROM p_profiles;
SELECT regress.err($$SELECT syncguard.protect('v_profiles')$$);
SELECT table_name, columns, policy FROM syncguard.protected_tables WHERE table_name = 'p_profiles'::regclass;

-- Only the owner may protect or unprotect.
CREATE ROLE sg_other;
GRANT ALL ON p_profiles TO sg_other;
GRANT USAGE ON SCHEMA public TO sg_other;
SET ROLE sg_other;
SELECT regress.err($$SELECT syncguard.protect('p_profiles')$$);
SELECT regress.err($$SELECT syncguard.unprotect('p_profiles')$$);
RESET ROLE;

SELECT syncguard.unprotect('p_profiles'), syncguard.unprotect('p_profiles');
UPDATE p_profiles SET external_data = '{"gone": true}' WHERE id = 1 RETURNING external_data;
SELECT table_name FROM syncguard.protected_tables ORDER BY 1;
DROP OWNED BY sg_other;
DROP ROLE sg_other;
