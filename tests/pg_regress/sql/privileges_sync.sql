-- The privilege model (docs/privileges.md) for sync runs, the retry queue,
-- the health views, invariants, entity events and housekeeping, with real
-- roles: an application role without superuser uses every one of them on its
-- own data; another role sees and changes none of it, neither through the
-- functions nor by writing the tables directly; sharing is by role
-- membership (GRANT producer TO consumer) where the model says so; an
-- invariant's check reads only what its owner may read, whoever runs it.
SET client_min_messages = warning;
-- What CREATE EXTENSION leaves for every role: EXECUTE on every function
-- but the Citus functions of the extension's owner (docs/citus.md),
-- SELECT on every view; on the tables, the grants to PUBLIC below (column
-- lists where a role must not choose an id or rename a row). Only two
-- functions run as their owner, and they only count or fold counters.
SELECT p.proname AS functions_without_execute
  FROM pg_depend d JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
 WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'syncguard')
   AND NOT EXISTS (SELECT FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                    WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')
 ORDER BY 1;
SELECT p.proname AS security_definer
  FROM pg_depend d JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
 WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'syncguard') AND p.prosecdef
 ORDER BY 1;
SELECT c.relname, c.relkind, c.relrowsecurity AS rls,
       (SELECT string_agg(a.privilege_type, ',' ORDER BY a.privilege_type)
          FROM aclexplode(c.relacl) a WHERE a.grantee = 0) AS public_table,
       (SELECT string_agg(x.privilege_type || '(' || x.cols || ')', ' ' ORDER BY x.privilege_type)
          FROM (SELECT a.privilege_type, string_agg(att.attname, ',' ORDER BY att.attnum) AS cols
                  FROM pg_attribute att CROSS JOIN LATERAL aclexplode(att.attacl) a
                 WHERE att.attrelid = c.oid AND a.grantee = 0 GROUP BY 1) x) AS public_columns
  FROM pg_depend d JOIN pg_class c ON d.classid = 'pg_class'::regclass AND d.objid = c.oid
 WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'syncguard') AND c.relkind IN ('r', 'v')
 ORDER BY c.relkind, c.relname;

-- The ids this file takes are given back at the end (other files print theirs).
SELECT string_agg(format('(%L::regclass, %s::bigint, %L::boolean)', s.schemaname || '.' || s.sequencename,
                         coalesce(s.last_value, s.start_value), s.last_value IS NOT NULL), ', ') AS sequences
  FROM pg_sequences s WHERE s.schemaname = 'syncguard' \gset

CREATE ROLE ps_producer NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
CREATE ROLE ps_consumer NOSUPERUSER NOBYPASSRLS;
CREATE ROLE ps_intruder NOSUPERUSER NOBYPASSRLS;
CREATE SCHEMA ps_app AUTHORIZATION ps_producer;
GRANT USAGE ON SCHEMA ps_app TO ps_intruder, ps_consumer;
-- Defining invariants takes CREATE on their schema (a superuser's grant).
GRANT CREATE ON SCHEMA syncguard_invariants TO ps_producer, ps_intruder;
-- a table of the superuser's that the producer may not read
CREATE TABLE ps_app.secret (id int PRIMARY KEY, leaked_at timestamptz);
INSERT INTO ps_app.secret VALUES (1, '2020-01-01');

-- 1. The producer, without superuser, uses every function and view on its own data.
SET ROLE ps_producer;
SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user;
-- sync runs
SELECT source, owner_role, run_timeout FROM syncguard.sync_configure('ps_src', run_timeout => '1 hour');
SELECT run_id AS ok_run, since IS NULL AS first_run FROM syncguard.sync_begin('ps_src', '{a,b}') \gset
SELECT :'first_run' AS first_run;
SELECT syncguard.sync_part(:ok_run, 'a', true, records => 3, latency => '10 ms'),
       syncguard.sync_part(:ok_run, 'b', true, records => 4, latency => '20 ms');
SELECT syncguard.sync_finish(:ok_run) AS advanced;
SELECT run_id AS stuck_run FROM syncguard.sync_begin('ps_src') \gset
SELECT syncguard.sync_part(:stuck_run, 'a', false, 'HTTP 503');
SELECT syncguard.sync_abandon_stale('ps_src') AS abandoned;   -- within its timeout: none
SELECT source, runs, failures, records, running, stale FROM syncguard.sync_health WHERE source = 'ps_src';
SELECT count(*) AS alerts FROM syncguard.sync_alerts WHERE name LIKE 'ps\_%';
SELECT status, count(*) FROM syncguard.sync_runs WHERE source = 'ps_src' GROUP BY 1 ORDER BY 1;
SELECT part, ok, reports FROM syncguard.sync_parts WHERE source = 'ps_src' ORDER BY run_id, part;
-- retry queue
SELECT queue, max_attempts FROM syncguard.queue_configure('ps_q', max_attempts => 2, base => '0', cap => '0', jitter => 0);
SELECT syncguard.enqueue('ps_q', '{"n": 1}', 'one') IS NOT NULL AS enqueued,
       syncguard.enqueue('ps_q', '{"n": 2}', 'two') IS NOT NULL AS enqueued_2;
SELECT job_id AS job1, attempt AS att1 FROM syncguard.dequeue('ps_q', 1) \gset
SELECT syncguard.ack(:job1, :att1);
SELECT job_id AS job2, attempt AS att2 FROM syncguard.dequeue('ps_q', 1) \gset
SELECT state, attempts FROM syncguard.nack(:job2, 'HTTP 500', false, :att2);
SELECT queue, payload, last_error FROM syncguard.dead_letters WHERE queue = 'ps_q';
SELECT syncguard.requeue_dead('ps_q') AS requeued;
SELECT job_id AS job2, attempt AS att2 FROM syncguard.dequeue('ps_q', 1) \gset
SELECT state FROM syncguard.nack(:job2, 'HTTP 500', false, :att2);
SELECT syncguard.purge_dead('ps_q', older_than => '1 hour') AS purged;  -- it died just now: kept
SELECT syncguard.enqueue('ps_q', '{"n": 3}', 'three') AS job3 \gset
SELECT queue, depth, ready, dead FROM syncguard.queue_stats WHERE queue = 'ps_q';
-- invariants, templates, events, housekeeping
CREATE TABLE ps_app.subs2 (id int);
CREATE TABLE ps_app.subs (id int PRIMARY KEY, cancelled_at timestamptz, billing boolean,
                          synced_at timestamptz, created_at timestamptz, email text);
INSERT INTO ps_app.subs VALUES (1, '2020-01-01', true, NULL, '2020-01-01', 'a@x'),
                               (2, NULL, true, '2020-01-01', '2020-01-01', 'a@x');
SELECT syncguard.define_invariant('ps_billed',
    $$SELECT id AS entity, cancelled_at AS since FROM ps_app.subs WHERE billing AND cancelled_at IS NOT NULL$$,
    severity => 'critical', remediation => 'stop billing');
SELECT syncguard.invariant_duplicates('ps_dup', 'ps_app.subs', '{email}'),
       syncguard.invariant_not_synced_within('ps_stale', 'ps_app.subs', 'synced_at', '1 day'),
       syncguard.invariant_never_synced('ps_never', 'ps_app.subs', 'synced_at', 'created_at'),
       syncguard.invariant_future_timestamps('ps_future', 'ps_app.subs', 'created_at'),
       syncguard.invariant_count_mismatch('ps_count', 'ps_app.subs', 'ps_app.subs2');
INSERT INTO syncguard.entity_events (entity, kind, at) VALUES ('ps-1', 'start', '2020-01-01'), ('ps-1', 'stop', '2020-01-02'),
                                                              ('ps-2', 'start', '2020-01-03');
SELECT * FROM syncguard.event_intervals('start', 'stop') WHERE entity LIKE 'ps-%';
SELECT syncguard.define_invariant('ps_open',
    $$SELECT entity, started_at AS since FROM syncguard.event_intervals('start', 'stop') WHERE entity LIKE 'ps-%' AND stopped_at IS NULL$$);
SELECT * FROM syncguard.due_invariants() d WHERE d.name LIKE 'ps\_%' ORDER BY 1;
SELECT invariant, status, violations, new_episodes, error FROM syncguard.check_invariants() ORDER BY 1;
SELECT count(*) AS due_after_check FROM syncguard.check_due_invariants();
SELECT entity, since FROM syncguard_invariants.ps_billed;
SELECT invariant, status, severity, open_violations FROM syncguard.audit();
SELECT invariant, entity, count, resolved_at IS NULL AS open FROM syncguard.violations ORDER BY 1, 2;
SELECT invariant, status FROM syncguard.invariant_runs ORDER BY 1;
SELECT syncguard.drop_invariant('ps_count') AS dropped;
-- (the counters of exited backends are everybody's: not shown)
SELECT task, affected FROM syncguard.housekeeping() WHERE task <> 'stale write counters folded';
RESET ROLE;

-- 2. Another role sees none of it and changes none of it.
SET ROLE ps_intruder;
SELECT (SELECT count(*) FROM syncguard.sync_sources) AS sources, (SELECT count(*) FROM syncguard.sync_runs) AS runs,
       (SELECT count(*) FROM syncguard.sync_parts) AS parts, (SELECT count(*) FROM syncguard.queues) AS queues,
       (SELECT count(*) FROM syncguard.queue_jobs) AS jobs, (SELECT count(*) FROM syncguard.dead_letters) AS dead,
       (SELECT count(*) FROM syncguard.sync_health) AS health, (SELECT count(*) FROM syncguard.queue_stats) AS stats,
       (SELECT count(*) FROM syncguard.sync_alerts) AS alerts, (SELECT count(*) FROM syncguard.invariants) AS invariants,
       (SELECT count(*) FROM syncguard.violations) AS violations, (SELECT count(*) FROM syncguard.invariant_runs) AS inv_runs,
       (SELECT count(*) FROM syncguard.entity_events) AS events, (SELECT count(*) FROM syncguard.audit()) AS audit,
       (SELECT count(*) FROM syncguard.due_invariants()) AS due,
       (SELECT count(*) FROM syncguard.event_intervals('start', 'stop')) AS intervals;
-- through the functions
SELECT regress.err_masked(format('SELECT syncguard.sync_part(%s, %L, false)', :ok_run, 'a')) AS sync_part,
       regress.err_masked(format('SELECT syncguard.sync_finish(%s)', :stuck_run)) AS sync_finish;
-- the producer's names are free for the intruder's own source, queue and
-- dedupe key (names are per owner); the producer's stay as they are
SELECT regress.err_masked($$SELECT syncguard.sync_begin('ps_src')$$) AS sync_begin,
       regress.err_masked($$SELECT syncguard.sync_configure('ps_src', overlap => '1 day')$$) AS sync_configure,
       regress.err_masked($$SELECT syncguard.queue_configure('ps_q', max_attempts => 99)$$) AS queue_configure;
SELECT regress.err_masked($$SELECT syncguard.enqueue('ps_q', '{"evil": 1}', 'three')$$) AS enqueue_same_key;
SELECT payload FROM syncguard.dequeue('ps_q', 10);
SELECT source, owner_role, overlap FROM syncguard.sync_sources;
-- a superuser sees both: a bare name is ambiguous
RESET ROLE;
SELECT regress.err_masked($$SELECT syncguard.sync_configure('ps_src')$$) AS superuser_source,
       regress.err_masked($$SELECT syncguard.queue_drop('ps_q')$$) AS superuser_queue;
SELECT source, owner_role FROM syncguard.sync_health WHERE source = 'ps_src' ORDER BY 2;
SELECT queue, owner_role, depth FROM syncguard.queue_stats WHERE queue = 'ps_q' ORDER BY 2;
SET ROLE ps_intruder;
SELECT regress.err_masked(format('SELECT syncguard.ack(%s)', :job3)) AS ack,
       regress.err_masked(format('SELECT syncguard.nack(%s, %L)', :job3, 'x')) AS nack;
SELECT syncguard.requeue_dead('ps_q') AS requeued, syncguard.purge_dead('ps_q') AS purged,
       syncguard.sync_abandon_stale() AS abandoned;
SELECT regress.err_masked('SELECT * FROM syncguard_invariants.ps_billed') AS view,
       regress.err_masked($$SELECT syncguard.check_invariants('ps_billed')$$) AS check_one;
-- names are per owner: the same name is its own invariant, beside the producer's
SELECT syncguard.define_invariant('ps_billed', 'SELECT 1 AS entity, now() AS since') AS own_ps_billed;
SELECT syncguard.drop_invariant('ps_billed') AS dropped_own;
SELECT syncguard.drop_invariant('ps_billed') AS dropped;
SELECT count(*) AS checked FROM syncguard.check_invariants();
SELECT task, affected FROM syncguard.housekeeping(keep_runs => '0') WHERE task <> 'stale write counters folded';
-- through the tables: updates and deletes find no row, forged rows are refused
SELECT regress.err_masked($$UPDATE syncguard.sync_sources SET watermark = now() + interval '1 year'$$) AS sources,
       regress.err_masked($$DELETE FROM syncguard.queue_jobs$$) AS jobs,
       regress.err_masked($$UPDATE syncguard.invariants SET enabled = false$$) AS invariants,
       regress.err_masked($$DELETE FROM syncguard.violations$$) AS violations,
       regress.err_masked($$DELETE FROM syncguard.entity_events$$) AS events;
-- the delete functions remove the intruder's own and none of the producer's rows
SELECT syncguard.sync_drop('ps_src') AS source_dropped, syncguard.sync_prune('0') AS runs_pruned,
       syncguard.queue_drop('ps_q') AS jobs_dropped, syncguard.violations_prune('0') AS episodes_pruned,
       syncguard.events_prune('-1 day') AS events_pruned;
-- nor does the deleting primitive, given the keys of the producer's rows
SELECT syncguard._delete_visible('syncguard.sync_sources', ARRAY['{"source": "ps_src"}'::jsonb]) AS forged_key,
       regress.err_masked($$SELECT syncguard._delete_visible('pg_catalog.pg_class', ARRAY['{"oid": 1259}'::jsonb])$$) AS other_table,
       regress.err_masked($$SELECT syncguard._delete_visible('syncguard.stale_writes', ARRAY['{}'::jsonb])$$) AS owners_table;
-- no table can be locked against the producer: no table-level UPDATE or DELETE
SELECT c.relname, regress.err_masked(format('LOCK TABLE syncguard.%I IN SHARE MODE NOWAIT', c.relname)) AS share_lock
  FROM pg_class c
 WHERE c.relnamespace = 'syncguard'::regnamespace AND c.relkind = 'r'
 ORDER BY 1;
-- a part for the producer's run, a run of its source (foreign keys do not see row-level security)
SELECT regress.err_masked(format($$INSERT INTO syncguard.sync_parts (source, run_id, part, ok, reported_at)
                           VALUES ('ps_src', %s, 'b', false, now())$$, :stuck_run)) AS forged_part,
       regress.err_masked($$INSERT INTO syncguard.sync_runs (source, started_at, deadline)
                     VALUES ('ps_src', now(), now() + interval '1 day')$$) AS forged_run;
-- rows stamped with the producer
SELECT regress.err_masked($$INSERT INTO syncguard.queue_jobs (queue, owner_role, payload, visible_at, enqueued_at)
                     VALUES ('ps_q', 'ps_producer', '{"evil": 1}', now(), now())$$) AS forged_job,
       regress.err_masked($$INSERT INTO syncguard.entity_events (entity, kind, owner_role) VALUES ('ps-2', 'stop', 'ps_producer')$$) AS forged_event;
-- an episode or run under an invariant it does not have (the producer's name)
SELECT regress.err_masked($$INSERT INTO syncguard.violations (invariant, owner_role, entity, since, first_seen, last_seen)
                     VALUES ('ps_never', 'ps_intruder', '2', now(), now(), now())$$) AS forged_episode,
       regress.err_masked($$INSERT INTO syncguard.invariant_runs (invariant, owner_role, started_at, finished_at, status)
                     VALUES ('ps_never', 'ps_intruder', now(), now(), 'ok')$$) AS forged_run;
-- a name taken without CREATE on syncguard_invariants and without a view
SELECT regress.err_masked($$INSERT INTO syncguard.invariants (name, query) VALUES ('ps_squat', 'SELECT 1')$$) AS squatted_name;
-- ids chosen by hand could take those the sequences hand to the producer next
SELECT regress.err_masked($$INSERT INTO syncguard.queue_jobs (job_id, queue, payload, visible_at, enqueued_at)
                     OVERRIDING SYSTEM VALUE VALUES (1000000000, 'ps_q', '{}', now(), now())$$) AS job_id,
       regress.err_masked($$INSERT INTO syncguard.entity_events (id, entity, kind) OVERRIDING SYSTEM VALUE VALUES (1, 'ps-1', 'x')$$) AS event_id;
-- its own rows cannot be moved under the producer's names
SELECT syncguard.define_invariant('ps_mine', $$SELECT 1 AS entity, '2020-01-01'::timestamptz AS since$$);
SELECT invariant, status FROM syncguard.check_invariants();
SELECT regress.err_masked($$UPDATE syncguard.violations SET invariant = 'ps_never', entity = '2'$$) AS move_episode,
       regress.err_masked($$UPDATE syncguard.invariants SET name = 'ps_other'$$) AS rename_invariant;
SELECT syncguard.drop_invariant('ps_mine', keep_history => false);
RESET ROLE;
-- the producer's data is as it left it
SELECT source, owner_role, watermark IS NOT NULL AS has_watermark, overlap FROM syncguard.sync_sources WHERE source = 'ps_src';
SELECT status, count(*) FROM syncguard.sync_runs WHERE source = 'ps_src' GROUP BY 1 ORDER BY 1;
SELECT queue, owner_role, max_attempts FROM syncguard.queues WHERE queue = 'ps_q';
SELECT queue, owner_role, state, payload FROM syncguard.queue_jobs WHERE queue = 'ps_q' ORDER BY payload::text;
SELECT name, owner_role, enabled FROM syncguard.invariants WHERE name LIKE 'ps\_%' ORDER BY 1;
SELECT invariant, owner_role, entity, resolved_at IS NULL AS open FROM syncguard.violations WHERE invariant LIKE 'ps\_%' ORDER BY 1, 3;
SELECT invariant, count(*) AS runs FROM syncguard.invariant_runs WHERE invariant LIKE 'ps\_%' GROUP BY 1 ORDER BY 1;
SELECT entity, kind, owner_role FROM syncguard.entity_events WHERE entity LIKE 'ps-%' ORDER BY id;

-- 3. Sharing by role membership: a consumer sees the producer's queue and
-- source once it is a member of the producer role, not before.
SET ROLE ps_consumer;
SELECT count(*) AS jobs_before_grant FROM syncguard.dequeue('ps_q', 10);
RESET ROLE;
GRANT ps_producer TO ps_consumer;
SET ROLE ps_consumer;
SELECT job_id AS job3, attempt AS att3, payload FROM syncguard.dequeue('ps_q', 10) \gset
SELECT :'payload' AS shared_payload;
SELECT syncguard.ack(:job3, :att3);
SELECT queue, depth FROM syncguard.queue_stats WHERE queue = 'ps_q';
SELECT source, runs, failures FROM syncguard.sync_health WHERE source = 'ps_src';
SELECT syncguard.sync_configure('ps_src', overlap => '1 minute') IS NOT NULL AS configured_shared_source;
-- invariants are the owner's alone, members included
SELECT count(*) AS invariants_seen_by_member FROM syncguard.invariants;
RESET ROLE;
REVOKE ps_producer FROM ps_consumer;

-- 4. A check runs as the invariant's owner, whoever runs it: the producer's
-- invariant over a table it may not read errors, for the superuser too.
SET ROLE ps_producer;
SELECT syncguard.define_invariant('ps_secret', $$SELECT id AS entity, leaked_at AS since FROM ps_app.secret$$);
SELECT regress.err_masked('SELECT * FROM syncguard_invariants.ps_secret') AS as_owner;
RESET ROLE;
SELECT rolsuper FROM pg_roles WHERE rolname = current_user;
SELECT invariant, status, violations, error FROM syncguard.check_invariants('ps_secret');
SELECT invariant, status, sqlstate FROM syncguard.invariant_runs WHERE invariant = 'ps_secret';
GRANT SELECT ON ps_app.secret TO ps_producer;
SELECT invariant, status, violations, error FROM syncguard.check_invariants('ps_secret');

-- clean up: the owner removes its own with the delete functions
SET ROLE ps_producer;
SELECT syncguard.events_prune('-1 day', 'ps-1') + syncguard.events_prune('-1 day', 'ps-2') AS events_pruned,
       syncguard.violations_prune('-1 day') AS episodes_pruned_open_kept;
SELECT syncguard.sync_prune('-1 day', 'ps_src') AS finished_runs_pruned;
SELECT status, count(*) AS runs_left FROM syncguard.sync_runs WHERE source = 'ps_src' GROUP BY 1;
SELECT syncguard.sync_drop('ps_src') AS source_dropped, syncguard.queue_drop('ps_q') AS jobs_dropped;
SELECT count(*) AS dropped FROM syncguard.invariants i, LATERAL syncguard.drop_invariant(i.name, false) WHERE i.name LIKE 'ps\_%';
RESET ROLE;
SELECT (SELECT count(*) FROM syncguard.sync_sources WHERE source = 'ps_src') AS sources,
       (SELECT count(*) FROM syncguard.sync_parts WHERE source = 'ps_src') AS parts,
       (SELECT count(*) FROM syncguard.queues WHERE queue = 'ps_q') AS queues,
       (SELECT count(*) FROM syncguard.queue_jobs WHERE queue = 'ps_q') AS jobs,
       (SELECT count(*) FROM syncguard.entity_events WHERE entity LIKE 'ps-%') AS events;
DROP SCHEMA ps_app CASCADE;
REVOKE CREATE ON SCHEMA syncguard_invariants FROM ps_producer, ps_intruder;
DROP OWNED BY ps_producer, ps_consumer, ps_intruder;
DROP ROLE ps_producer;
DROP ROLE ps_consumer;
DROP ROLE ps_intruder;
SELECT bool_and(setval(s, v, c) IS NOT NULL) AS ids_given_back FROM (VALUES :sequences) AS x(s, v, c);
