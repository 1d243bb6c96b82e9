-- pgbench, benches/sections/upsert.sh: the UPDATE an ORM sends when the
-- application changed one leaf of a document it loaded: every column but the
-- key in SET (here the one, data) with the whole document, of which one leaf
-- (s2.g1.f1) differs from the stored one. The document the application holds
-- is the row as every run starts from it (profiles_seed) with that leaf
-- changed: pgbench cannot send another 1 KB literal for every key, so the
-- statement reads it by primary key and sets the leaf with jsonb_set, the same
-- on both sides (protected table and unprotected). Casts on every variable,
-- so that it runs with -M prepared too.
\set uid random(1, 100000)
\set v random(1, 1000000)
UPDATE profiles
   SET data = (SELECT jsonb_set(s.data, '{s2,g1,f1}', to_jsonb('orm_' || :v::text))
                 FROM profiles_seed s WHERE s.user_id = :uid::int)
 WHERE user_id = :uid::int;
