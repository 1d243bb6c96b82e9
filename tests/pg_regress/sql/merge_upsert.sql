-- merge_upsert: inserts, deep merges, NULL handling, type conversion,
-- policies (columns, last_write_wins, version, freshness) and every error.

CREATE TABLE profiles (
    id int PRIMARY KEY,
    name text,
    age int,
    tags text[],
    external_data jsonb,
    raw json,
    created_at timestamptz DEFAULT '2026-01-01 00:00:00+00'
);

-- A new row: key and data, other columns their defaults.
SELECT syncguard.merge_upsert('profiles', '{"id": 1}',
    '{"name": "Ada", "age": "36", "tags": ["a", "b c"], "external_data": {"contact": {"email": "ada@example.com"}, "billing": {"plan": "pro", "card": "visa"}}, "raw": {"x": [1, 2]}}');

-- The incident: a sync whose billing sub-fetch failed writes what it has.
-- billing survives, contact is updated, NULL name keeps the stored name.
SELECT syncguard.merge_upsert('profiles', '{"id": 1}',
    '{"name": null, "external_data": {"contact": {"email": "ada@new.example.com", "phone": "+44"}}}');

-- A column left out of data is untouched; a jsonb null keeps the stored value.
SELECT syncguard.merge_upsert('profiles', '{"id": 1}', '{"age": 37, "external_data": null}') -> 'external_data' AS kept;
SELECT name, age FROM profiles WHERE id = 1;

-- Tombstones delete keys; a whole-document tombstone clears the column.
SELECT syncguard.merge_upsert('profiles', '{"id": 1}', '{"external_data": {"billing": {"card": {"$delete": true}}}}') -> 'external_data';
SELECT syncguard.merge_upsert('profiles', '{"id": 1}', jsonb_build_object('raw', NULL, 'external_data', syncguard.tombstone())) -> 'external_data';

-- Only key columns: the row is returned as stored, nothing changes.
SELECT syncguard.merge_upsert('profiles', '{"id": 1}', '{}') ->> 'name';
SELECT syncguard.merge_upsert('profiles', '{"id": 2}', '{"id": 2}');

-- nulls: overwrite lets NULL replace stored values; a column rule replaces whole.
SELECT syncguard.merge_upsert('profiles', '{"id": 3}', '{"name": "Bo", "external_data": {"a": 1, "b": 2}}');
SELECT syncguard.merge_upsert('profiles', '{"id": 3}', '{"name": null, "external_data": {"a": null}}', '{"nulls": "overwrite"}');
SELECT syncguard.merge_upsert('profiles', '{"id": 3}', '{"external_data": {"c": 3}}', '{"columns": {"external_data": "replace"}}') -> 'external_data';
SELECT syncguard.merge_upsert('profiles', '{"id": 3}', '{"tags": ["x"]}', '{"columns": {"external_data": {"arrays": "union"}}}') -> 'tags';
SELECT syncguard.merge_upsert('profiles', '{"id": 3}', '{"external_data": {"l": [1, 2]}}', '{"arrays": "union"}') -> 'external_data';
SELECT syncguard.merge_upsert('profiles', '{"id": 3}', '{"external_data": {"l": [2, 3]}}', '{"arrays": "union"}') -> 'external_data';
SELECT syncguard.merge_upsert('profiles', '{"id": 3}', '{"external_data": {"inv": {"x": 1}, "price": 5}}',
                              '{"paths": {"inv": "replace", "price": "keep"}}') -> 'external_data';
SELECT syncguard.merge_upsert('profiles', '{"id": 3}', '{"external_data": {"inv": {"y": 2}, "price": 9}}',
                              '{"paths": {"inv": "replace", "price": "keep"}}') -> 'external_data';

-- The returned row equals to_jsonb of the stored row, scalar documents included.
CREATE TEMP TABLE returned AS
SELECT syncguard.merge_upsert('profiles', '{"id": 5}', '{"external_data": "just text", "tags": []}') AS r
UNION ALL
SELECT syncguard.merge_upsert('profiles', '{"id": 6}', '{"name": "Di", "external_data": {"a": [1, {"b": null}]}}');
SELECT r, r = (SELECT to_jsonb(p) FROM profiles p WHERE p.id = (r ->> 'id')::int) AS same_as_stored FROM returned;

-- Composite unique keys, in any order; quoted identifiers.
CREATE TABLE "Odd ""Table""" ("Key A" text, "key;b" int, "Doc" jsonb, UNIQUE ("key;b", "Key A"));
SELECT syncguard.merge_upsert('"Odd ""Table"""', '{"Key A": "x", "key;b": 1}', '{"Doc": {"a": 1}}');
SELECT syncguard.merge_upsert('"Odd ""Table"""', '{"key;b": 1, "Key A": "x"}', '{"Doc": {"b": 2}}');

-- Errors name the table and column, and write nothing.
SELECT regress.err($$SELECT syncguard.merge_upsert('profiles', '{"id": 1}', '{"nope": 1}')$$);
SELECT regress.err($$SELECT syncguard.merge_upsert('profiles', '{"id": 1}', '{"age": "old"}')$$);
SELECT regress.err($$SELECT syncguard.merge_upsert('profiles', '{"id": 1}', '{"age": {"n": 1}}')$$);
-- (a ragged array: merge_upsert_server_text, whose message differs by version)
SELECT regress.err($$SELECT syncguard.merge_upsert('profiles', '{"id": "one"}', '{}')$$);
SELECT regress.err($$SELECT syncguard.merge_upsert('profiles', '{"name": "Ada"}', '{}')$$);
SELECT regress.err($$SELECT syncguard.merge_upsert('profiles', '{"id": null}', '{}')$$);
SELECT regress.err($$SELECT syncguard.merge_upsert('profiles', '{"id": 1}', '{"id": 2}')$$);
SELECT regress.err($$SELECT syncguard.merge_upsert('profiles', '{}', '{}')$$);
SELECT regress.err($$SELECT syncguard.merge_upsert('profiles', '[1]', '{}')$$);
SELECT regress.err($$SELECT syncguard.merge_upsert('profiles', '{"id": 1}', '"x"')$$);
SELECT regress.err($$SELECT syncguard.merge_upsert('profiles', NULL, '{}')$$);
SELECT regress.err($$SELECT syncguard.merge_upsert('profiles', '{"id": 1}', NULL)$$);
SELECT regress.err($$SELECT syncguard.merge_upsert('no_such_table', '{"id": 1}', '{}')$$);
SELECT regress.err($$SELECT syncguard.merge_upsert('profiles', '{"id": 1}', '{}', '{"arrays": "zip"}')$$);
SELECT regress.err($$SELECT syncguard.merge_upsert('profiles', '{"id": 1}', '{}', '{"colums": {}}')$$);
SELECT regress.err($$SELECT syncguard.merge_upsert('profiles', '{"id": 1}', '{}', '{"version": "name"}')$$);
SELECT regress.err($$SELECT syncguard.merge_upsert('profiles', '{"id": 1}', '{}', '{"last_write_wins": "nope"}')$$);
SELECT regress.err($$SELECT syncguard.merge_upsert('pg_class', '{"oid": 1}', '{}')$$);
CREATE VIEW profile_names AS SELECT id, name FROM profiles;
SELECT regress.err($$SELECT syncguard.merge_upsert('profile_names', '{"id": 1}', '{}')$$);
CREATE TABLE gen (id int PRIMARY KEY, a int, b int GENERATED ALWAYS AS (a * 2) STORED);
SELECT regress.err($$SELECT syncguard.merge_upsert('gen', '{"id": 1}', '{"b": 1}')$$);
CREATE TABLE partial_key (id int, live bool);
CREATE UNIQUE INDEX ON partial_key (id) WHERE live;
SELECT regress.err($$SELECT syncguard.merge_upsert('partial_key', '{"id": 1}', '{}')$$);
SELECT id, name, age, tags, external_data FROM profiles ORDER BY id;

-- A plan survives ALTER TABLE: the next call sees the new column.
SELECT syncguard.merge_upsert('profiles', '{"id": 4}', '{"name": "Cy"}') ->> 'name';
ALTER TABLE profiles ADD COLUMN nickname text;
SELECT syncguard.merge_upsert('profiles', '{"id": 4}', '{"name": "Cy"}') ? 'nickname' AS sees_new_column;
ALTER TABLE profiles DROP COLUMN nickname;
SELECT syncguard.merge_upsert('profiles', '{"id": 4}', '{"name": "Cy"}') ? 'nickname' AS still_there;

-- last_write_wins: older writes are ignored and counted; future ones rejected.
CREATE TABLE items (sku text PRIMARY KEY, qty int, synced_at timestamptz, doc jsonb);
SELECT syncguard.merge_upsert('items', '{"sku": "a"}', '{"qty": 5, "synced_at": "2026-01-02T00:00:00Z"}', '{"last_write_wins": "synced_at"}') ->> 'qty';
SELECT syncguard.merge_upsert('items', '{"sku": "a"}', '{"qty": 4, "synced_at": "2026-01-01T00:00:00Z"}', '{"last_write_wins": "synced_at"}') ->> 'qty' AS stale_ignored;
SELECT syncguard.merge_upsert('items', '{"sku": "a"}', '{"qty": 6, "synced_at": "2026-01-03T00:00:00Z"}', '{"last_write_wins": "synced_at"}') ->> 'qty' AS newer_applied;
SELECT syncguard.merge_upsert('items', '{"sku": "a"}', '{"qty": 7}', '{"last_write_wins": "synced_at"}') ->> 'qty' AS unordered_applied;
SELECT table_name, stale_ignored FROM syncguard.conflict_stats;
SELECT regexp_replace(regress.err(format($$SELECT syncguard.merge_upsert('items', '{"sku": "a"}', jsonb_build_object('qty', 1, 'synced_at', %L::timestamptz), '{"last_write_wins": "synced_at"}')$$,
                                         clock_timestamp() + interval '10 minutes')),
                      '[0-9.]+ s ahead|detail: .* \|', 'X', 'g');
SELECT syncguard.merge_upsert('items', '{"sku": "b"}', jsonb_build_object('synced_at', clock_timestamp() + interval '10 minutes'),
                              '{"last_write_wins": "synced_at", "max_clock_skew": "1 hour"}') ->> 'sku' AS policy_skew_allows;
SELECT regress.err($$SELECT syncguard.merge_upsert('items', '{"sku": "a"}', '{"synced_at": "2026-11-21T00:00:00Z"}', '{"last_write_wins": "synced_at", "max_clock_skew": "forever"}')$$);
SET syncguard.max_clock_skew = '1h';
SELECT syncguard.merge_upsert('items', '{"sku": "c"}', jsonb_build_object('synced_at', clock_timestamp() + interval '10 minutes'),
                              '{"last_write_wins": "synced_at"}') ->> 'sku' AS setting_allows;
RESET syncguard.max_clock_skew;
SELECT qty FROM items WHERE sku = 'a';

-- version: a write must carry a version greater than the stored one.
CREATE TABLE docs (id int PRIMARY KEY, v int NOT NULL DEFAULT 1, body jsonb);
SELECT syncguard.merge_upsert('docs', '{"id": 1}', '{"v": 1, "body": {"a": 1}}', '{"version": "v"}');
SELECT syncguard.merge_upsert('docs', '{"id": 1}', '{"v": 2, "body": {"b": 2}}', '{"version": "v"}');
SELECT regress.err($$SELECT syncguard.merge_upsert('docs', '{"id": 1}', '{"v": 2, "body": {"c": 3}}', '{"version": "v"}')$$);
SELECT regress.err($$SELECT syncguard.merge_upsert('docs', '{"id": 1}', '{"v": null, "body": {"c": 3}}', '{"version": "v"}')$$);
SELECT regress.err($$SELECT syncguard.merge_upsert('docs', '{"id": 1}', '{"body": {"c": 3}}', '{"version": "v"}')$$);
SELECT * FROM docs;

-- freshness: the companion column stamps each top-level key written.
CREATE TABLE fresh (id int PRIMARY KEY, data jsonb, data_seen jsonb);
BEGIN;
SELECT syncguard.merge_upsert('fresh', '{"id": 1}', '{"data": {"a": 1, "b": {"x": 1}, "e": {}}}', '{"freshness": {"data": "data_seen"}}') -> 'data';
SELECT jsonb_object_keys(data_seen) AS stamped, (data_seen ->> 'a')::timestamptz = now() AS at_now,
       data_seen ->> 'a' LIKE '____-__-__T__:__:__%+00:00' AS iso_utc FROM fresh;
COMMIT;
UPDATE fresh SET data_seen = '{"a": "2000-01-01T00:00:00+00:00", "b": "2000-01-01T00:00:00+00:00"}';
BEGIN;
SELECT syncguard.merge_upsert('fresh', '{"id": 1}', '{"data": {"b": {"y": 2}, "c": null, "a": {"$delete": true}}}', '{"freshness": {"data": "data_seen"}}') -> 'data';
SELECT data_seen ? 'a' AS a_still_stamped, (data_seen ->> 'b')::timestamptz = now() AS b_restamped, data_seen ? 'c' AS null_not_stamped FROM fresh;
COMMIT;
SELECT regress.err($$SELECT syncguard.merge_upsert('fresh', '{"id": 1}', '{"data": {}, "data_seen": {}}', '{"freshness": {"data": "data_seen"}}')$$);
SELECT regress.err($$SELECT syncguard.merge_upsert('fresh', '{"id": 1}', '{}', '{"freshness": {"data": "id"}}')$$);
