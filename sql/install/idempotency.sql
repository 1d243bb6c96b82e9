-- Idempotency log: syncguard.idempotency_keys and the claim / complete / fail
-- protocol (docs/idempotency.md). Loaded in the order of src/install_order.rs.
--
-- Every object is schema-qualified and every plpgsql function pins
-- search_path = pg_catalog, pg_temp: this script assumes no search_path.
-- idem_claim and idem_complete, the two calls of every request, are C
-- (src/idempotency.rs): their statements, prepared once per backend, qualify
-- every name, operators included, and need no setting of their own.
--
-- Clock: lease, retry and expiry checks use clock_timestamp(), read once per
-- call, not now(). now() is the start of the transaction, so a lease taken late
-- in a long transaction would be measured from a moment already past and
-- expire early, and a claim would judge other leases by a stale clock.
--
-- Plans: the plpgsql functions that find a row by its key SET enable_seqscan
-- and enable_bitmapscan off. A session keeps its plans; one made while the
-- table was nearly empty (a new install) would otherwise stay a sequential
-- scan while the table fills up with keys. idem_claim finds its key through
-- ON CONFLICT's arbiter index, which no plan chooses.
--
-- Privileges: the functions are SECURITY INVOKER. Each role has its own
-- keys: owner_role (= current_user) is part of the primary key, so two roles
-- (two applications) using the same scope and key never meet, and no role
-- can take a key before another. The table is granted to PUBLIC under
-- row-level security: a role sees, claims, completes and prunes only the
-- keys stamped with its own name. Superusers and the table owner bypass
-- row-level security (they administer every key); the functions still work
-- only on the caller's own keys.

-- An enum, and no CHECK constraints: PostgreSQL reads and prepares a table's
-- CHECK expressions anew for every INSERT and UPDATE statement, and every
-- claim and every completion writes a row (three checks cost a claim and its
-- completion some 10 µs, a fifth of their time). The functions keep what the
-- checks said: attempts >= 1, a running key has lease_expires_at, a failed
-- one next_attempt_at; tests/client/tests/idempotency_load.rs watches for a row without.
CREATE TYPE syncguard.idem_status AS ENUM ('running', 'succeeded', 'failed', 'dead');

CREATE TABLE syncguard.idempotency_keys (
    -- Citus: distribute by scope; every unique key contains it and every
    -- claim filters it by equality.
    scope            text        NOT NULL,
    key              text        NOT NULL,
    owner_role       text        NOT NULL DEFAULT current_user,
    fingerprint      text        NOT NULL,
    status           syncguard.idem_status NOT NULL,
    response         jsonb,
    last_error       text,
    attempts         integer     NOT NULL DEFAULT 1,
    lease_token      uuid        NOT NULL,
    lease_expires_at timestamptz,
    next_attempt_at  timestamptz,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at       timestamptz NOT NULL,
    PRIMARY KEY (scope, key, owner_role)
) WITH (fillfactor = 90);  -- room for HOT updates: complete/fail change no indexed column

COMMENT ON TABLE syncguard.idempotency_keys IS
    'syncguard idempotency log: one row per (scope, key); use syncguard.idem_claim/idem_complete/idem_fail';

-- complete/fail find a key by its token. Not unique: a Citus unique index
-- must contain the distribution column; tokens are random UUIDs.
CREATE INDEX idempotency_keys_token ON syncguard.idempotency_keys (lease_token);
-- No index on expires_at: it would tax every claim, the hot path, for the
-- sake of idem_prune, whose batches stop at the first `batch` expired rows of
-- a sequential scan, and expired keys are the oldest, near the heap's start.

SELECT pg_catalog.pg_extension_config_dump('syncguard.idempotency_keys', '');

ALTER TABLE syncguard.idempotency_keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY idempotency_keys_own ON syncguard.idempotency_keys
    USING (owner_role = current_user)
    WITH CHECK (owner_role = current_user);
-- No table-level UPDATE or DELETE: either would let a role LOCK the table
-- against every other role (src/row_delete.rs). idem_prune deletes.
GRANT SELECT, INSERT ON syncguard.idempotency_keys TO PUBLIC;
GRANT UPDATE (fingerprint, status, response, last_error, attempts, lease_token, lease_expires_at,
              next_attempt_at, created_at, updated_at, expires_at) ON syncguard.idempotency_keys TO PUBLIC;

-- The delay before retry number `attempt` + 1 after `attempt` failed:
-- least(cap, base * 2^(attempt-1)), spread uniformly by ±jitter (a fraction)
-- so that clients failing together do not retry together. VOLATILE because of
-- random(); PARALLEL RESTRICTED like random() itself (its seed is per
-- process); STRICT: NULL in, NULL out. Shared with the retry queue.
CREATE FUNCTION syncguard.backoff_delay(
    attempt integer,
    base interval DEFAULT '2 seconds',
    cap interval DEFAULT '10 minutes',
    jitter double precision DEFAULT 0.2
) RETURNS interval
LANGUAGE plpgsql VOLATILE STRICT PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    base_s double precision := extract(epoch FROM base);
    cap_s  double precision := extract(epoch FROM cap);
    d      double precision;
BEGIN
    IF attempt < 1 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('backoff attempt must be at least 1, got %s', attempt),
            HINT = 'Pass the number of the attempt that failed (the first is 1).';
    END IF;
    IF base_s < 0 OR cap_s < 0 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('backoff base and cap must not be negative, got base %s and cap %s', base, cap),
            HINT = 'Pass intervals such as ''2 seconds'' and ''10 minutes''.';
    END IF;
    IF jitter < 0 OR jitter > 1 OR jitter = 'NaN' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('backoff jitter must be between 0 and 1, got %s', jitter),
            HINT = 'jitter is a fraction: 0.2 spreads the delay by up to 20% either way.';
    END IF;
    -- In seconds as float8: 2^(attempt-1) overflows no interval this way.
    d := least(cap_s, base_s * power(2::double precision, least(attempt - 1, 1000)));
    IF jitter > 0 THEN
        d := d * (1 + jitter * (2 * random() - 1));
    END IF;
    -- At most 100 years: a huge cap would overflow the interval.
    RETURN make_interval(secs => least(d, 3155760000));
END
$$;

-- The fingerprint of a request: sha256 (hex) of jsonb's own text form, which
-- is canonical for key order, whitespace and duplicate keys. `ignore` lists
-- volatile fields left out: a top-level key, or a dotted path ('meta.sent_at').
CREATE FUNCTION syncguard.request_fingerprint(request jsonb, ignore text[] DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    doc jsonb := request;
    field text;
BEGIN
    IF ignore IS NOT NULL THEN
        FOREACH field IN ARRAY ignore LOOP
            CONTINUE WHEN field IS NULL;
            IF strpos(field, '.') > 0 THEN
                doc := doc #- string_to_array(field, '.');
            ELSIF jsonb_typeof(doc) = 'object' THEN
                doc := doc - field;
            END IF;
        END LOOP;
    END IF;
    RETURN encode(sha256(convert_to(coalesce(doc::text, 'null'), 'UTF8')), 'hex');
END
$$;

-- Claim (scope, key) for request. A new key is one INSERT ... ON CONFLICT DO
-- NOTHING. A key that exists goes to an INSERT ... ON CONFLICT DO UPDATE,
-- which arbitrates between concurrent callers: it takes over an expired
-- lease or a failed key whose retry is due, or an expired key (a new
-- request); otherwise it changes nothing but leaves the row locked until the
-- end of the transaction, and the locked row decides the outcome. With
-- `complete`, a key it claims is stored succeeded with that response at once
-- (work in the claim's own transaction: one write of the key, no
-- idem_complete). The statements are in src/idempotency.rs.
CREATE FUNCTION syncguard.idem_claim(
    scope text,
    key text,
    request jsonb,
    lease interval DEFAULT '30 seconds',
    ttl interval DEFAULT '24 hours',
    ignore text[] DEFAULT NULL,
    complete jsonb DEFAULT NULL,
    OUT outcome text,
    OUT token uuid,
    OUT response jsonb,
    OUT attempt integer,
    OUT retry_at timestamptz
)
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'idem_claim_wrapper';

-- Raised by idem_complete/idem_fail when `tok` holds no running lease.
CREATE FUNCTION syncguard._idem_lease_lost(tok uuid, caller text, scope text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
DECLARE
    cur record;
BEGIN
    SELECT k.scope, k.key, k.status INTO cur
      FROM syncguard.idempotency_keys AS k
     WHERE k.lease_token = tok AND (_idem_lease_lost.scope IS NULL OR k.scope = _idem_lease_lost.scope)
       AND k.owner_role = current_user;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'SG002',
            MESSAGE = format('%s: idempotency key %L in scope %L is already %s; nothing changed',
                             caller, cur.key, cur.scope, cur.status),
            HINT = 'A key is completed or failed once per claim; claim it again to retry.';
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'SG002',
        MESSAGE = format('%s: the token holds no lease; nothing changed', caller),
        DETAIL = 'The token is unknown, or its lease expired and another claim took the key over.',
        HINT = 'The work may be running again elsewhere: make it safe to repeat, or use a longer lease.';
END
$$;

-- Record the response of a claimed key: status succeeded; later claims of
-- the key replay `response`. An expired lease that nobody took over still
-- completes. `scope` is optional: given, the lookup stays on one Citus shard.
CREATE FUNCTION syncguard.idem_complete(token uuid, response jsonb, scope text DEFAULT NULL)
RETURNS void
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'idem_complete_wrapper';

-- Record a failed attempt. Retryable and below max_attempts: status failed,
-- the next claim is due after backoff_delay(attempts, base, cap); otherwise
-- status dead, and claims answer `dead` until the key expires.
CREATE FUNCTION syncguard.idem_fail(
    token uuid,
    error text,
    retryable boolean DEFAULT true,
    max_attempts integer DEFAULT 5,
    base interval DEFAULT '2 seconds',
    cap interval DEFAULT '10 minutes',
    scope text DEFAULT NULL,
    OUT status text,
    OUT attempt integer,
    OUT retry_at timestamptz
)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
DECLARE
    t timestamptz := clock_timestamp();
    me text := current_user;
    -- t + backoff_delay(attempts, base, cap) of the row, written out in the
    -- UPDATE in epoch seconds, its random jitter drawn here: Citus runs an
    -- UPDATE of a distributed table only with immutable functions in a CASE.
    t_s double precision := extract(epoch FROM t);
    base_s double precision := extract(epoch FROM base);
    cap_s double precision := extract(epoch FROM cap);
    spread double precision := 1 + 0.2 * (2 * random() - 1);
BEGIN
    IF token IS NULL OR retryable IS NULL OR max_attempts IS NULL OR base IS NULL OR cap IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004',
            MESSAGE = 'idem_fail: token, retryable, max_attempts, base and cap must not be NULL',
            HINT = 'Pass the token idem_claim returned with outcome claimed.';
    END IF;
    IF max_attempts < 1 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('idem_fail: max_attempts must be at least 1, got %s', max_attempts),
            HINT = 'max_attempts counts every attempt, the first included.';
    END IF;
    IF base < interval '0' OR cap < interval '0' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('idem_fail: base and cap must not be negative, got base %s and cap %s', base, cap),
            HINT = 'Pass intervals such as ''2 seconds'' and ''10 minutes''.';
    END IF;
    UPDATE syncguard.idempotency_keys AS k
       SET status = CASE WHEN retryable AND k.attempts < max_attempts
                         THEN 'failed'::syncguard.idem_status ELSE 'dead' END,
           next_attempt_at = CASE WHEN retryable AND k.attempts < max_attempts
                                  THEN to_timestamp(t_s + least(3155760000, spread *
                                           least(cap_s, base_s * power(2::double precision, least(k.attempts - 1, 1000))))) END,
           last_error = error, lease_expires_at = NULL, updated_at = t
     WHERE k.lease_token = idem_fail.token AND k.status = 'running'
       AND k.owner_role = me
       AND (idem_fail.scope IS NULL OR k.scope = idem_fail.scope)
    RETURNING k.status, k.attempts, k.next_attempt_at INTO status, attempt, retry_at;
    IF NOT FOUND THEN
        PERFORM syncguard._idem_lease_lost(token, 'idem_fail', scope);
    END IF;
END
$$;

-- Delete up to `batch` expired keys (expires_at passed, and not running under
-- a live lease) and return how many. Rows another transaction has locked are
-- skipped, so pruning never waits. Call it until it returns less than `batch`,
-- each call in its own transaction, to keep every lock short.
CREATE FUNCTION syncguard.idem_prune(batch integer DEFAULT 1000, scope text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t timestamptz := clock_timestamp();
    n bigint;
    s text;
    distributed boolean := false;
    victims jsonb[];
BEGIN
    IF batch IS NULL OR batch < 1 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('idem_prune: batch must be at least 1, got %s', coalesce(batch::text, 'NULL')),
            HINT = 'Call idem_prune repeatedly with a moderate batch (e.g. 1000).';
    END IF;
    IF pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL THEN
        EXECUTE 'SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition
                                 WHERE logicalrelid = ''syncguard.idempotency_keys''::pg_catalog.regclass)'
           INTO distributed;
    END IF;
    IF distributed AND idem_prune.scope IS NOT NULL THEN
        -- Citus: scope = $n makes the read and every delete one shard's
        -- statements. The keys are read in a statement of their own (Citus
        -- would send a call with that subquery to the shard, where
        -- _delete_visible cannot reach the table), and without a row lock:
        -- the owner's deletes use a connection of their own, which would
        -- wait for the caller's. Each key carries its row version instead,
        -- so a key claimed again since is not deleted.
        victims := ARRAY(
            SELECT jsonb_build_object('scope', e.scope, 'key', e.key, 'owner_role', e.owner_role,
                                      'xmin', e.xmin)
              FROM syncguard.idempotency_keys AS e
             WHERE e.scope = idem_prune.scope AND e.expires_at < t
               AND NOT (e.status = 'running' AND e.lease_expires_at > t)
             LIMIT batch);
        RETURN syncguard._delete_visible('syncguard.idempotency_keys', victims);
    END IF;
    IF distributed THEN
        -- Citus runs no FOR UPDATE across shards: a scope at a time, each
        -- batch on its shard.
        n := 0;
        FOR s IN SELECT DISTINCT e.scope FROM syncguard.idempotency_keys AS e WHERE e.expires_at < t LOOP
            n := n + syncguard.idem_prune(batch - n::integer, s);
            EXIT WHEN n >= batch;
        END LOOP;
        RETURN n;
    END IF;
    -- The rows a claim is writing right now are locked: skipped, not waited for.
    victims := ARRAY(
            SELECT jsonb_build_object('scope', e.scope, 'key', e.key, 'owner_role', e.owner_role)
              FROM syncguard.idempotency_keys AS e
             WHERE e.expires_at < t
               AND NOT (e.status = 'running' AND e.lease_expires_at > t)
               AND (idem_prune.scope IS NULL OR e.scope = idem_prune.scope)
             LIMIT batch
               FOR UPDATE SKIP LOCKED);
    RETURN syncguard._delete_visible('syncguard.idempotency_keys', victims);
END
$$;

-- Keys by scope and status. security_invoker: row-level security applies to
-- the caller, so a role sees its own keys (superusers see all).
CREATE VIEW syncguard.idempotency_summary WITH (security_invoker = true) AS
SELECT k.scope,
       k.status,
       count(*)                                               AS keys,
       sum(k.attempts)                                        AS attempts,
       count(*) FILTER (WHERE k.status = 'running'
                          AND k.lease_expires_at <= clock_timestamp()) AS leases_expired,
       count(*) FILTER (WHERE k.expires_at < clock_timestamp()) AS expired,
       min(k.created_at)                                      AS oldest,
       max(k.updated_at)                                      AS newest
  FROM syncguard.idempotency_keys AS k
 GROUP BY k.scope, k.status;

GRANT SELECT ON syncguard.idempotency_summary TO PUBLIC;
GRANT EXECUTE ON FUNCTION
    syncguard.backoff_delay(integer, interval, interval, double precision),
    syncguard.request_fingerprint(jsonb, text[]),
    syncguard.idem_claim(text, text, jsonb, interval, interval, text[], jsonb),
    syncguard.idem_complete(uuid, jsonb, text),
    syncguard.idem_fail(uuid, text, boolean, integer, interval, interval, text),
    syncguard.idem_prune(integer, text)
    TO PUBLIC;

COMMENT ON FUNCTION syncguard.backoff_delay(integer, interval, interval, double precision) IS
    'delay before the next attempt: least(cap, base * 2^(attempt-1)) spread by +-jitter';
COMMENT ON FUNCTION syncguard.request_fingerprint(jsonb, text[]) IS
    'canonical sha256 of a request, leaving out the ignored fields';
COMMENT ON FUNCTION syncguard.idem_claim(text, text, jsonb, interval, interval, text[], jsonb) IS
    'claim an idempotency key: claimed, replay, in_progress, retry_later or dead';
COMMENT ON FUNCTION syncguard.idem_complete(uuid, jsonb, text) IS
    'record the response of a claimed key; later claims replay it';
COMMENT ON FUNCTION syncguard.idem_fail(uuid, text, boolean, integer, interval, interval, text) IS
    'record a failed attempt: retry after backoff, or dead';
COMMENT ON FUNCTION syncguard.idem_prune(integer, text) IS
    'delete up to batch expired idempotency keys';
COMMENT ON FUNCTION syncguard._idem_lease_lost(uuid, text, text) IS
    'internal: raises SG002 for a token that holds no lease';
