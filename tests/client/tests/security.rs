//! Attacks by an ordinary role, against a real server with the background
//! worker running. `mallory` has LOGIN, a schema of her own and the
//! documented CREATE on `syncguard_invariants`, nothing else; `alice` is the
//! victim. Each test attempts an attack that once worked and asserts that it
//! fails and that nothing changed: `rolsuper`, the checker's settings, the
//! channel's payloads, the counters. docs/privileges.md ("Attacks kept as
//! tests") lists them.

use syncguard_client_tests::common;

use common::TestCluster;
use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};
use serde_json::Value;
use std::thread::sleep;
use std::time::{Duration, Instant};

fn cluster() -> (TestCluster, Client) {
    let cluster = TestCluster::with_settings(&[
        ("shared_preload_libraries", "syncguard"),
        ("syncguard.worker_interval", "1"),
        ("syncguard.worker_database", "postgres"),
    ]);
    let mut admin = cluster.connect_with_extension();
    admin
        .batch_execute(
            "CREATE ROLE mallory LOGIN;
             CREATE ROLE alice LOGIN;
             CREATE SCHEMA mschema AUTHORIZATION mallory;
             CREATE SCHEMA alice AUTHORIZATION alice;
             GRANT CREATE ON SCHEMA syncguard_invariants TO mallory, alice;",
        )
        .unwrap();
    (cluster, admin)
}

fn connect_as(cluster: &TestCluster, role: &str, db: &str) -> Client {
    cluster
        .config(db)
        .user(role)
        .connect(NoTls)
        .unwrap_or_else(|e| panic!("connect as {role}: {e}"))
}

fn is_superuser(admin: &mut Client, role: &str) -> bool {
    admin
        .query_one("SELECT rolsuper FROM pg_roles WHERE rolname = $1", &[&role])
        .unwrap()
        .get(0)
}

fn code(e: &postgres::Error) -> String {
    e.code().map_or("(none)".into(), |c| c.code().to_string())
}

/// Waits until the worker has checked `invariant` at least `runs` times.
fn worker_ran(admin: &mut Client, invariant: &str, runs: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM syncguard.invariant_runs WHERE invariant = $1",
                &[&invariant],
            )
            .unwrap()
            .get(0);
        if n >= runs {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not check {invariant}"
        );
        sleep(Duration::from_millis(100));
    }
}

/// An invariant's query tries every way back to the checker's user: the
/// functions that once switched it back are gone, RESET ROLE, SET ROLE and
/// SET SESSION AUTHORIZATION are refused in the sandbox, a nested check is
/// refused, and ALTER ROLE runs as mallory. Checked by the worker and by a
/// superuser, mallory stays an ordinary role.
#[test]
fn an_invariant_cannot_leave_its_sandbox() {
    let (cluster, mut admin) = cluster();
    let mut mallory = connect_as(&cluster, "mallory", "postgres");

    // The published attack: the function it called no longer exists.
    let e = mallory
        .batch_execute(
            "SELECT syncguard.define_invariant('m3',
               $q$SELECT 'x'::text AS entity, now() - interval '1 day' AS since
                  WHERE syncguard.invariant_check_leave() IS NOT NULL$q$)",
        )
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNDEFINED_FUNCTION), "{e}");

    mallory
        .batch_execute(
            "CREATE FUNCTION mschema.escape() RETURNS int LANGUAGE plpgsql AS $$
             BEGIN
                 BEGIN EXECUTE 'RESET ROLE'; EXCEPTION WHEN others THEN NULL; END;
                 BEGIN EXECUTE 'SET ROLE postgres'; EXCEPTION WHEN others THEN NULL; END;
                 BEGIN EXECUTE 'SET SESSION AUTHORIZATION postgres'; EXCEPTION WHEN others THEN NULL; END;
                 BEGIN PERFORM set_config('role', 'postgres', false); EXCEPTION WHEN others THEN NULL; END;
                 BEGIN PERFORM syncguard._invariant_check_run('postgres'::regrole, 'escape', 1000);
                 EXCEPTION WHEN others THEN NULL; END;
                 BEGIN EXECUTE 'ALTER ROLE mallory SUPERUSER'; EXCEPTION WHEN others THEN NULL; END;
                 RETURN 1;
             END $$;
             SELECT syncguard.define_invariant('escape',
               $q$SELECT 'x'::text AS entity, now() - interval '1 day' AS since WHERE mschema.escape() = 1$q$,
               schedule => '1 second');",
        )
        .unwrap();

    worker_ran(&mut admin, "escape", 2);
    let status: String = admin
        .query_one(
            "SELECT status FROM syncguard.check_invariants('escape')",
            &[],
        )
        .unwrap()
        .get(0);
    // The query ran to its end (every escape was tried) and found its row.
    assert_eq!(status, "violating");
    assert!(!is_superuser(&mut admin, "mallory"));
    // The superuser's session is its own again.
    let me: String = admin
        .query_one("SELECT current_user::text", &[])
        .unwrap()
        .get(0);
    assert_eq!(me, "postgres");
    // Mallory cannot run a check as another role either.
    let e = mallory
        .query_one(
            "SELECT * FROM syncguard._invariant_check_run('postgres'::regrole, 'escape', 1000)",
            &[],
        )
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{e}");
}

/// Settings an invariant's query changes, even with `set_config(…, false)`,
/// are rolled back when its check ends: in a superuser's session, and in the
/// worker's, which runs every owner's checks one after the other (alice's
/// probe, checked after mallory's, records the search_path it sees).
#[test]
fn settings_changed_by_a_check_do_not_survive_it() {
    let (cluster, mut admin) = cluster();
    let mut mallory = connect_as(&cluster, "mallory", "postgres");
    let mut alice = connect_as(&cluster, "alice", "postgres");
    mallory
        .batch_execute(
            "CREATE FUNCTION mschema.lower(text) RETURNS text LANGUAGE plpgsql AS $$
             BEGIN
                 BEGIN EXECUTE 'ALTER ROLE mallory SUPERUSER'; EXCEPTION WHEN others THEN NULL; END;
                 RETURN 'pwned';
             END $$;
             SELECT syncguard.define_invariant('a_settings',
               $q$SELECT 'x'::text AS entity, now() - interval '1 day' AS since
                  WHERE set_config('search_path', 'mschema, pg_catalog, public', false) IS NOT NULL
                    AND set_config('work_mem', '1234kB', false) IS NOT NULL
                    AND set_config('syncguard.max_clock_skew', '1', false) IS NOT NULL$q$,
               schedule => '1 second');",
        )
        .unwrap();
    alice
        .batch_execute(
            "SELECT syncguard.define_invariant('b_probe',
               $q$SELECT current_setting('search_path') || ' ' || current_setting('work_mem') AS entity,
                         now() - interval '1 day' AS since$q$,
               schedule => '1 second');",
        )
        .unwrap();

    let before: Vec<String> = settings(&mut admin);
    let statuses: Vec<(String, String)> = admin
        .query(
            "SELECT invariant, status FROM syncguard.check_invariants()",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        statuses,
        [
            ("a_settings".to_string(), "violating".to_string()),
            ("b_probe".to_string(), "violating".to_string())
        ]
    );
    assert_eq!(settings(&mut admin), before);
    let lower: String = admin.query_one("SELECT lower('ABC')", &[]).unwrap().get(0);
    assert_eq!(lower, "abc");
    assert!(!is_superuser(&mut admin, "mallory"));

    // The worker's session: every episode of alice's probe saw its own settings.
    admin
        .batch_execute("DELETE FROM syncguard.violations; DELETE FROM syncguard.invariant_runs")
        .unwrap();
    worker_ran(&mut admin, "b_probe", 3);
    let seen: Vec<String> = admin
        .query(
            "SELECT DISTINCT entity FROM syncguard.violations WHERE invariant = 'b_probe'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!seen.is_empty());
    for s in &seen {
        assert!(!s.contains("mschema") && !s.contains("1234kB"), "{seen:?}");
    }
    assert!(!is_superuser(&mut admin, "mallory"));
}

fn settings(client: &mut Client) -> Vec<String> {
    client
        .query(
            "SELECT current_setting(n) FROM unnest(ARRAY['search_path', 'work_mem',
                    'syncguard.max_clock_skew', 'role', 'statement_timeout']) AS n",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// `CREATE EXTENSION` refuses a `syncguard` schema another role made first
/// (she could rename it after the install and plant her own functions), and
/// one that already holds objects; it takes an empty one a superuser made.
#[test]
fn the_install_refuses_a_schema_it_does_not_own() {
    let (cluster, mut admin) = cluster();
    admin.batch_execute("CREATE DATABASE victim").unwrap();
    admin
        .batch_execute("GRANT CREATE ON DATABASE victim TO mallory")
        .unwrap();
    let mut mallory = connect_as(&cluster, "mallory", "victim");
    mallory.batch_execute("CREATE SCHEMA syncguard").unwrap();

    let mut admin = connect_as(&cluster, "postgres", "victim");
    let e = admin
        .batch_execute("CREATE EXTENSION syncguard")
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{e}");
    let msg = e.as_db_error().unwrap().message().to_string();
    assert!(msg.contains("belongs to role mallory"), "{msg}");
    let installed: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_extension WHERE extname = 'syncguard'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(installed, 0);

    admin
        .batch_execute(
            "DROP SCHEMA syncguard;
             CREATE SCHEMA syncguard;
             CREATE TABLE syncguard.leftover ();",
        )
        .unwrap();
    let e = admin
        .batch_execute("CREATE EXTENSION syncguard")
        .unwrap_err();
    assert_eq!(code(&e), "42P06", "{e}");

    admin
        .batch_execute("DROP TABLE syncguard.leftover; CREATE EXTENSION syncguard")
        .unwrap();
    // And a fresh install owns its schemas: nobody else can rename them.
    let e = mallory
        .batch_execute("ALTER SCHEMA syncguard RENAME TO old")
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{e}");
}

/// Anybody may LISTEN on `syncguard_alerts`: the payload carries the
/// invariant's name and an id, never the violating entity or the texts, and
/// the id is useless to a role that cannot read the episode.
#[test]
fn the_alert_channel_carries_no_data_of_other_roles() {
    let (cluster, _admin) = cluster();
    let mut alice = connect_as(&cluster, "alice", "postgres");
    let mut mallory = connect_as(&cluster, "mallory", "postgres");
    mallory.batch_execute("LISTEN syncguard_alerts").unwrap();
    alice
        .batch_execute(
            "CREATE TABLE alice.cards (number text, declined_at timestamptz);
             INSERT INTO alice.cards VALUES ('4111-1111-1111-1111', now() - interval '1 day');
             SELECT syncguard.define_invariant('declined_cards',
                 'SELECT number AS entity, declined_at AS since FROM alice.cards',
                 remediation => 'Call the card holder at +1 555 0100', schedule => '1 hour');
             SELECT syncguard.check_invariants('declined_cards');",
        )
        .unwrap();
    let note = mallory
        .notifications()
        .timeout_iter(Duration::from_secs(60))
        .next()
        .unwrap()
        .expect("no alert arrived");
    let payload: Value = serde_json::from_str(note.payload()).unwrap();
    let keys: Vec<&String> = payload.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["id", "invariant", "kind"], "{payload}");
    assert!(!note.payload().contains("4111") && !note.payload().contains("555"));
    let id = payload["id"].as_i64().unwrap();
    let seen = mallory
        .query(
            "SELECT entity FROM syncguard.violations WHERE id = $1",
            &[&id],
        )
        .unwrap();
    assert!(seen.is_empty());
    let seen = alice
        .query(
            "SELECT entity FROM syncguard.violations WHERE id = $1",
            &[&id],
        )
        .unwrap();
    assert_eq!(seen[0].get::<_, String>(0), "4111-1111-1111-1111");
}

/// Only the protection trigger counts ignored writes (no SQL function
/// does); only a table's owner may switch its protection off.
#[test]
fn counters_and_bypass_belong_to_the_owner() {
    let (cluster, mut admin) = cluster();
    let mut alice = connect_as(&cluster, "alice", "postgres");
    let mut mallory = connect_as(&cluster, "mallory", "postgres");
    alice
        .batch_execute(
            "CREATE TABLE alice.t (id int PRIMARY KEY, updated_at timestamptz, data jsonb);
             INSERT INTO alice.t VALUES (1, now(), '{\"a\": 1, \"b\": 2}');
             SELECT syncguard.protect('alice.t', policy => '{\"last_write_wins\": \"updated_at\"}');
             GRANT USAGE ON SCHEMA alice TO mallory;
             GRANT SELECT, UPDATE ON alice.t TO mallory;
             UPDATE alice.t SET updated_at = now() - interval '1 hour', data = '{}';",
        )
        .unwrap();
    let stale: i64 = admin
        .query_one(
            "SELECT stale_ignored FROM syncguard.conflict_stats WHERE table_name = 'alice.t'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        stale, 1,
        "a writer without privileges on the counters still counts"
    );

    let e = mallory
        .batch_execute("SELECT syncguard.note_stale_write('alice.t')")
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNDEFINED_FUNCTION), "{e}");
    let e = mallory
        .batch_execute("INSERT INTO syncguard.stale_writes VALUES ('made.up', 1, 50000, now())")
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{e}");
    let rows: i64 = admin
        .query_one("SELECT count(*) FROM syncguard.stale_writes", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);

    let e = mallory
        .batch_execute(
            "BEGIN; SET LOCAL syncguard.bypass_protection = on;
             UPDATE alice.t SET data = '{}', updated_at = now(); COMMIT;",
        )
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{e}");
    mallory.batch_execute("ROLLBACK").unwrap();
    let data: String = admin
        .query_one("SELECT data::text FROM alice.t", &[])
        .unwrap()
        .get(0);
    assert_eq!(data, r#"{"a": 1, "b": 2}"#);

    alice
        .batch_execute(
            "BEGIN; SET LOCAL syncguard.bypass_protection = on;
             UPDATE alice.t SET data = '{}', updated_at = now(); COMMIT;",
        )
        .unwrap();
    let data: String = admin
        .query_one("SELECT data::text FROM alice.t", &[])
        .unwrap()
        .get(0);
    assert_eq!(data, "{}");
}

/// The delete functions delete as the table's owner (`_delete_visible`):
/// nothing in those statements may resolve through the caller's
/// search_path. mallory puts a schema of hers first, with types and
/// functions named like the built-in ones a key lookup uses, each a trap
/// that would make her superuser; then she prunes her own keys, drops her
/// own queue and source, and calls the primitive directly.
#[test]
fn deleting_as_the_owner_resolves_nothing_through_the_callers_search_path() {
    let (cluster, mut admin) = cluster();
    let mut mallory = connect_as(&cluster, "mallory", "postgres");
    mallory
        .batch_execute(
            "CREATE FUNCTION mschema.trap() RETURNS boolean LANGUAGE plpgsql AS $$
             BEGIN
                 IF current_user <> 'mallory' THEN EXECUTE 'ALTER ROLE mallory SUPERUSER'; END IF;
                 RETURN true;
             END $$;
             CREATE DOMAIN mschema.text AS pg_catalog.text CHECK (mschema.trap());
             CREATE DOMAIN mschema.int8 AS pg_catalog.int8 CHECK (mschema.trap());
             CREATE DOMAIN mschema.bigint AS pg_catalog.int8 CHECK (mschema.trap());
             CREATE FUNCTION mschema.count(anyelement) RETURNS bigint LANGUAGE sql AS 'SELECT 1::bigint WHERE mschema.trap()';
             SELECT syncguard.idem_complete(token, '{}') FROM syncguard.idem_claim('m', 'k1', '{}', ttl => '1 ms');
             SELECT syncguard.enqueue('m_q', '{}');
             SELECT syncguard.sync_begin('m_src');
             SELECT syncguard.queue_configure('m_q2', max_attempts => 3);
             SELECT pg_sleep(0.01);
             SET search_path = mschema, pg_catalog;
             SELECT syncguard.idem_prune();
             SELECT syncguard.queue_drop('m_q');
             SELECT syncguard.sync_drop('m_src');
             SELECT syncguard._delete_visible('syncguard.queues',
                                              ARRAY['{\"queue\": \"m_q2\", \"owner_role\": \"mallory\"}'::jsonb]);",
        )
        .unwrap();
    assert!(!is_superuser(&mut admin, "mallory"));
    let left: i64 = admin
        .query_one(
            "SELECT (SELECT count(*) FROM syncguard.idempotency_keys WHERE scope = 'm')
                  + (SELECT count(*) FROM syncguard.queue_jobs WHERE queue = 'm_q')
                  + (SELECT count(*) FROM syncguard.sync_sources WHERE source = 'm_src')
                  + (SELECT count(*) FROM syncguard.queues WHERE queue = 'm_q2')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "her own rows are deleted all the same");
}

/// Errors from hostile arguments carry a proper SQLSTATE and no Rust
/// backtrace or source path.
#[test]
fn hostile_arguments_get_clean_errors() {
    let (cluster, _admin) = cluster();
    let mut mallory = connect_as(&cluster, "mallory", "postgres");
    for (sql, want) in [
        (
            "SELECT syncguard.merge_upsert('pg_authid', '{\"oid\": 10}', '{\"rolsuper\": true}')",
            "0A000",
        ),
        (
            "SELECT syncguard.merge_upsert('pg_class', '{\"oid\": 1}', '{\"relname\": \"x\"}')",
            "0A000",
        ),
        ("SELECT syncguard.merge_upsert(NULL, '{}', '{}')", "22004"),
        ("SELECT syncguard.protect(NULL)", "22004"),
        ("SELECT syncguard.unprotect(NULL)", "22004"),
        (
            "SELECT syncguard._protect_config(NULL, NULL, NULL)",
            "22004",
        ),
    ] {
        let e = mallory.batch_execute(sql).unwrap_err();
        let db = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e}"));
        let detail = db.detail().unwrap_or("");
        assert_eq!(db.code().code(), want, "{sql}: {db:?}");
        assert!(
            !detail.contains(".rs:")
                && !detail.contains("backtrace")
                && !db.message().contains(".rs:"),
            "{sql}: {db:?}"
        );
    }
}

/// Every function PUBLIC may execute, against the list of those meant for
/// users (or harmless to them: each internal one here says why it is safe).
/// A new function fails this test until it is added here on purpose.
#[test]
fn public_functions_are_an_allow_list() {
    let (_cluster, mut admin) = cluster();
    let public: Vec<String> = admin
        .query(
            "SELECT p.oid::regprocedure::text
               FROM pg_proc p
              WHERE p.pronamespace = 'syncguard'::regnamespace
                AND has_function_privilege('public', p.oid, 'EXECUTE')
              ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut allowed: Vec<&str> = ALLOWED.to_vec();
    allowed.sort_unstable();
    let public: Vec<&str> = public.iter().map(String::as_str).collect();
    let extra: Vec<&&str> = public.iter().filter(|f| !allowed.contains(f)).collect();
    let gone: Vec<&&str> = allowed.iter().filter(|f| !public.contains(f)).collect();
    assert!(
        extra.is_empty() && gone.is_empty(),
        "executable by PUBLIC but not allowed: {extra:#?}\nallowed but not executable: {gone:#?}"
    );
}

/// The functions PUBLIC may execute. Internal ones are marked with why
/// calling them directly gives a role nothing it could not do otherwise.
const ALLOWED: &[&str] = &[
    // merge core: pure, reads no table
    "syncguard.jsonb_deep_merge(jsonb,jsonb,jsonb)",
    "syncguard.jsonb_deep_merge_agg(jsonb)",
    "syncguard.jsonb_deep_merge_agg(jsonb,jsonb)",
    "syncguard.jsonb_deep_merge_op(jsonb,jsonb)",
    "syncguard.jsonb_merge_diff(jsonb,jsonb)",
    "syncguard.jsonb_merge_patch(jsonb,jsonb)",
    "syncguard.tombstone()",
    "syncguard.version()",
    // merge upserts and protection: as the caller, on tables the caller may write or owns
    "syncguard.merge_upsert(regclass,jsonb,jsonb,jsonb)",
    "syncguard.protect(regclass,text[],jsonb)",
    "syncguard.unprotect(regclass)",
    // internal, called by protect() as the caller: reads only the catalog
    "syncguard._protect_config(regclass,text[],jsonb)",
    "syncguard._require_owner(regclass)",
    "syncguard._protect_partition_check(regclass,text)",
    "syncguard._inheritance_children(regclass)",
    // internal: pure, the per-key freshness stamps of merge_upsert
    "syncguard._freshness_stamp(jsonb,jsonb,timestamp with time zone)",
    // internal: the trigger function; PostgreSQL refuses a direct call
    "syncguard._protect_trigger()",
    // idempotency keys: the caller's own keys (row-level security)
    "syncguard.idem_claim(text,text,jsonb,interval,interval,text[],jsonb)",
    "syncguard.idem_complete(uuid,jsonb,text)",
    "syncguard.idem_fail(uuid,text,boolean,integer,interval,interval,text)",
    "syncguard.idem_prune(integer,text)",
    "syncguard.request_fingerprint(jsonb,text[])",
    "syncguard.backoff_delay(integer,interval,interval,double precision)",
    // internal: only raises the lease-lost error about the caller's own key
    "syncguard._idem_lease_lost(uuid,text,text)",
    // sync runs and the retry queue: rows the caller may see (row-level security)
    "syncguard.sync_begin(text,text[])",
    "syncguard.sync_part(bigint,text,boolean,text,integer,interval)",
    "syncguard.sync_finish(bigint)",
    "syncguard.sync_configure(text,interval,interval,interval,double precision,interval,interval)",
    "syncguard.sync_abandon_stale(text)",
    "syncguard.sync_prune(interval,text)",
    "syncguard.sync_drop(text)",
    "syncguard.enqueue(text,jsonb,text,interval)",
    "syncguard.dequeue(text,integer,interval)",
    "syncguard.ack(bigint,integer)",
    "syncguard.nack(bigint,text,boolean,integer)",
    "syncguard.requeue_dead(text,bigint[])",
    "syncguard.purge_dead(text,interval)",
    "syncguard.queue_drop(text)",
    "syncguard.queue_configure(text,integer,interval,interval,double precision,interval)",
    // internal: which role's source, queue or invariant a name means, from
    // the rows the caller can see
    "syncguard._name_owner(text[],text,text)",
    "syncguard._sync_source_owner(text)",
    "syncguard._queue_owner(text)",
    "syncguard._invariant_owner(text)",
    // internal: lock a run or job the caller can see, as the caller
    "syncguard._sync_locked_run(bigint,text)",
    "syncguard._queue_leased_job(bigint,integer,text)",
    // internal: retries or kills a visible job only once its lease ran out
    "syncguard._queue_lease_expired(bigint,text)",
    // internal: deletes, as the table's owner, only rows of the shared
    // tables that the caller's row-level security lets it see
    "syncguard._delete_visible(regclass,jsonb[])",
    // internal: the row-level security policies call it for every role
    "syncguard.has_privs_of(text)",
    // invariants: the caller's own (row-level security)
    "syncguard.define_invariant(text,text,interval,text,text,text,interval,interval,boolean,text)",
    "syncguard.drop_invariant(text,boolean)",
    "syncguard.violations_prune(interval,text)",
    "syncguard.check_invariants(text)",
    "syncguard.check_due_invariants()",
    "syncguard.due_invariants()",
    "syncguard.audit()",
    "syncguard.invariant_duplicates(text,regclass,text[],text,interval,text,text,interval)",
    "syncguard.invariant_count_mismatch(text,regclass,regclass,bigint,text,text,interval)",
    "syncguard.invariant_future_timestamps(text,regclass,text,interval,text[],text,text,interval)",
    "syncguard.invariant_never_synced(text,regclass,text,text,text[],interval,text,text,interval)",
    "syncguard.invariant_not_synced_within(text,regclass,text,interval,text[],interval,text,text,interval)",
    "syncguard.event_intervals(text,text,text)",
    "syncguard.events_prune(interval,text)",
    "syncguard.housekeeping(integer,interval)",
    // internal, template helpers: read only the catalog
    "syncguard._invariant_column(regclass,text,regtype)",
    "syncguard._invariant_entity(regclass,text[])",
    // internal: parses a query, runs nothing
    "syncguard._invariant_query_text(text)",
    // internal: one check of the caller's own invariants (or of a role whose
    // privileges the caller has), in the sandbox; refuses anyone else
    "syncguard._run_invariant_check(text,text)",
    "syncguard._invariant_check_run(oid,text,integer)",
    // internal: pure, builds the alert's JSON text
    "syncguard._alert_payload(text,text,bigint)",
    // internal: SECURITY DEFINER; folds the counters of exited backends, changes no total
    "syncguard._fold_stale_writes()",
    // reconciliation: SECURITY INVOKER, reads and writes only what the caller
    // may (both tables, merge_upsert as the caller); the template defines
    // the caller's own invariant
    "syncguard.reconcile(regclass,regclass,text[],text[],integer,integer)",
    "syncguard.reconcile_apply(regclass,regclass,text[],text[],integer,integer,integer,jsonb)",
    "syncguard.invariant_reconcile(text,regclass,regclass,text[],text[],integer,integer,interval,text,text,interval,interval)",
    // internal, reconciliation: build SQL text from the catalog, run nothing
    "syncguard._reconcile_columns(regclass,regclass,text[],text[])",
    "syncguard._reconcile_hash(text,regtype,integer,boolean)",
    "syncguard._reconcile_compare(text[],regtype[],jsonb,text)",
    "syncguard._reconcile_bucket(text,regtype,jsonb)",
    "syncguard._reconcile_segment(text[],regtype[],jsonb)",
    "syncguard._reconcile_ranges(text[],regtype[],jsonb)",
    "syncguard._reconcile_where(text[],regtype[],jsonb,integer[])",
    "syncguard._reconcile_rows_query(regclass,regclass,text[],text[],text)",
    "syncguard._reconcile_row_hash_args(regclass,regclass,text[],text[])",
    "syncguard._reconcile_row_hash_takes(regtype)",
    // internal, reconciliation: pure, hash the values they are given
    "syncguard._reconcile_row_hash(\"any\")",
    "syncguard._reconcile_checksums(integer,\"any\")",
    "syncguard._reconcile_checksums_final(internal)",
    // internal: refuses a call from anything but its aggregate
    "syncguard._reconcile_checksums_step(internal,integer,\"any\")",
    // internal: merge_upsert taking its key and data as names and values;
    // refuses a role that may not execute merge_upsert
    "syncguard._merge_upsert_fields(regclass,text[],text[],\"any\")",
    // internal: merge_upsert's planner support, only callable by the planner
    "syncguard._merge_upsert_support(internal)",
];
