-- Retry queue: enqueue with dedupe and delay, dequeue with visibility,
-- ack, nack with backoff, dead letters and requeue, queue_stats and
-- sync_alerts, and every error. Job ids vary: they are kept in psql variables.

-- No jitter and a 1 s base so the backoff schedule is exact: 1 s, 2 s, 4 s.
SELECT queue, max_attempts, base, cap, jitter
  FROM syncguard.queue_configure('mail', max_attempts => 4, base => '1 second', jitter => 0);

SELECT syncguard.enqueue('mail', '{"to": "ann"}') AS j1 \gset
SELECT syncguard.enqueue('mail', '{"to": "bob"}', dedupe_key => 'bob') AS j2 \gset
-- The same dedupe key while bob's job is live: no second job, the same id.
SELECT syncguard.enqueue('mail', '{"to": "bob", "again": true}', dedupe_key => 'bob') = :j2 AS deduplicated;
-- The key is per queue.
SELECT syncguard.enqueue('sms', '{"to": "bob"}', dedupe_key => 'bob') <> :j2 AS other_queue_other_job;
-- A delayed job is not due yet.
SELECT syncguard.enqueue('mail', '{"to": "cid"}', delay => '1 hour') AS j3 \gset
SELECT queue, depth, ready, in_flight, failed, dead FROM syncguard.queue_stats
 WHERE queue IN ('mail', 'sms') ORDER BY queue;

-- dequeue hands out due jobs, oldest first, at most n.
SELECT job_id = :j1 AS is_j1, payload, attempt, dedupe_key, last_error FROM syncguard.dequeue('mail', 1);
SELECT job_id = :j2 AS is_j2, payload, attempt, dedupe_key FROM syncguard.dequeue('mail', 10, '1 hour');
-- Leased and delayed jobs are not handed out.
SELECT count(*) AS nothing_due FROM syncguard.dequeue('mail', 10);
SELECT depth, ready, in_flight FROM syncguard.queue_stats WHERE queue = 'mail';

-- ack deletes; a second ack is an error, as is an ack at the wrong attempt.
SELECT regress.err(format('SELECT syncguard.ack(%s, 2)', :j1));
SELECT syncguard.ack(:j1, 1);
SELECT regress.err(format('SELECT syncguard.ack(%s)', :j1));

-- nack: due again after backoff_delay(attempt) = 1 s, 2 s, 4 s; dead at the 4th.
SELECT state, attempts, retry_at - clock_timestamp() BETWEEN interval '0.9 s' AND interval '1 s' AS after_1s
  FROM syncguard.nack(:j2, 'SMTP 451');
SELECT depth, ready, in_flight, failed FROM syncguard.queue_stats WHERE queue = 'mail';
-- Make it due now (as if the second had passed) and fail it again.
UPDATE syncguard.queue_jobs SET visible_at = now() WHERE job_id = :j2;
SELECT attempt, last_error FROM syncguard.dequeue('mail');
SELECT state, attempts, retry_at - clock_timestamp() BETWEEN interval '1.9 s' AND interval '2 s' AS after_2s
  FROM syncguard.nack(:j2, 'SMTP 451 again');
UPDATE syncguard.queue_jobs SET visible_at = now() WHERE job_id = :j2;
SELECT attempt FROM syncguard.dequeue('mail');
SELECT state, attempts, retry_at - clock_timestamp() BETWEEN interval '3.9 s' AND interval '4 s' AS after_4s
  FROM syncguard.nack(:j2, 'SMTP 451 once more');
UPDATE syncguard.queue_jobs SET visible_at = now() WHERE job_id = :j2;
SELECT attempt FROM syncguard.dequeue('mail');
SELECT state, attempts, retry_at FROM syncguard.nack(:j2, 'SMTP 550 mailbox full');
-- Dead: listed in dead_letters, raised in sync_alerts, never handed out.
SELECT job_id = :j2 AS is_j2, payload, dedupe_key, attempts, last_error FROM syncguard.dead_letters WHERE queue = 'mail';
SELECT count(*) AS nothing_due FROM syncguard.dequeue('mail', 10);
SELECT kind, name, alert, detail FROM syncguard.sync_alerts WHERE name = 'mail';
-- A dead job no longer holds its dedupe key.
SELECT syncguard.enqueue('mail', '{"to": "bob", "new": true}', dedupe_key => 'bob') AS j4 \gset
SELECT :j4 <> :j2 AS new_job;
-- ... so requeueing the dead one is skipped while the live one exists.
SELECT syncguard.requeue_dead('mail') AS requeued_while_key_taken;
SELECT job_id = :j4 AS is_j4, attempt FROM syncguard.dequeue('mail');
SELECT syncguard.ack(:j4);
SELECT syncguard.requeue_dead('mail', ARRAY[:j2]) AS requeued;
SELECT job_id = :j2 AS is_j2, attempt, last_error FROM syncguard.dequeue('mail');
SELECT count(*) AS dead_left FROM syncguard.dead_letters WHERE queue = 'mail';

-- A non-retryable failure goes straight to dead letters; purge_dead removes them.
SELECT state, attempts FROM syncguard.nack(:j2, 'invalid address', retryable => false);
SELECT syncguard.purge_dead('mail', '1 hour') AS purged_too_young, syncguard.purge_dead('mail') AS purged;

-- A lease that expires without ack or nack is a failed attempt (the
-- consumer died): the job is not handed out again at once but after the
-- backoff, the late consumer's ack is refused, and after max_attempts
-- deliveries the job is dead, with the dead alert.
SELECT max_attempts FROM syncguard.queue_configure('lease', max_attempts => 2, base => '10 milliseconds',
                                                    cap => '10 milliseconds', jitter => 0);
SELECT syncguard.enqueue('lease', '{"to": "dee"}') AS j5 \gset
SELECT attempt FROM syncguard.dequeue('lease', 1, '10 milliseconds');
SELECT pg_sleep(0.05);
SELECT count(*) AS handed_out_at_once FROM syncguard.dequeue('lease');
SELECT state, attempts, last_error, visible_at > clock_timestamp() - interval '1 second' AS backing_off
  FROM syncguard.queue_jobs WHERE job_id = :j5;
SELECT regress.err(format('SELECT syncguard.ack(%s, 1)', :j5));
SELECT pg_sleep(0.05);
SELECT job_id = :j5 AS is_j5, attempt FROM syncguard.dequeue('lease', 1, '10 milliseconds');
SELECT pg_sleep(0.05);
SELECT count(*) AS handed_out FROM syncguard.dequeue('lease');
SELECT state, attempts, last_error FROM syncguard.queue_jobs WHERE job_id = :j5;
SELECT queue, dead, dead_alert FROM syncguard.queue_stats WHERE queue = 'lease';
DELETE FROM syncguard.queue_jobs WHERE queue = 'lease';
DELETE FROM syncguard.queues WHERE queue = 'lease';

-- Backlog alert: a due job waiting longer than max_job_age.
SELECT (syncguard.queue_configure('slow', max_job_age => '1 minute')).max_job_age;
SELECT syncguard.enqueue('slow', '{}') AS s1 \gset
UPDATE syncguard.queue_jobs SET visible_at = now() - interval '5 minutes',
                                enqueued_at = now() - interval '5 minutes' WHERE job_id = :s1;
SELECT queue, depth, ready, date_trunc('minute', oldest_job_age) AS oldest_job_age, backlog_alert
  FROM syncguard.queue_stats WHERE queue = 'slow';
SELECT kind, name, alert, regexp_replace(detail, 'waited [^ ]+', 'waited <age>') AS detail
  FROM syncguard.sync_alerts WHERE name = 'slow';

-- Errors.
SELECT regress.err($$SELECT syncguard.enqueue(NULL, '{}')$$);
SELECT regress.err($$SELECT syncguard.enqueue('', '{}')$$);
SELECT regress.err($$SELECT syncguard.enqueue('q', NULL)$$);
SELECT regress.err($$SELECT syncguard.enqueue('q', '{}', delay => '-1 s')$$);
SELECT regress.err($$SELECT syncguard.enqueue('q', '{}', delay => '1000 years')$$);
SELECT regress.err($$SELECT * FROM syncguard.dequeue('q', 0)$$);
SELECT regress.err($$SELECT * FROM syncguard.dequeue('q', 1, '0')$$);
SELECT regress.err($$SELECT * FROM syncguard.dequeue(NULL)$$);
SELECT regress.err($$SELECT syncguard.ack(NULL)$$);
SELECT regress.err($$SELECT syncguard.ack(-1)$$);
SELECT regress.err($$SELECT * FROM syncguard.nack(-1, 'x')$$);
SELECT regress.err($$SELECT * FROM syncguard.nack(1, 'x', retryable => NULL)$$);
SELECT regress.err(format('SELECT * FROM syncguard.nack(%s, %L)', :j3, 'not leased'));
SELECT regress.err($$SELECT syncguard.queue_configure('mail', max_attempts => 0)$$);
SELECT regress.err($$SELECT syncguard.queue_configure('mail', jitter => 2)$$);
SELECT regress.err($$SELECT syncguard.requeue_dead(NULL)$$);

-- Plans: a session keeps the plans it made while the table was small; as the
-- table grows, enqueue (dedupe lookup), dequeue, ack and nack still find jobs
-- by index, never by reading the whole table. Six rounds: past the plan
-- cache's custom plans, to the plan it keeps.
VACUUM syncguard.queue_jobs;  -- statistics of a small table
\c
DO $$
DECLARE d record;
BEGIN
    FOR i IN 1..6 LOOP
        PERFORM syncguard.enqueue('plans', '{}', dedupe_key => 'p');
        PERFORM syncguard.enqueue('plans', '{}', dedupe_key => 'p');
        SELECT * INTO d FROM syncguard.dequeue('plans');
        PERFORM syncguard.ack(d.job_id, d.attempt);
        PERFORM syncguard.enqueue('plans', '{}');
        SELECT * INTO d FROM syncguard.dequeue('plans');
        PERFORM syncguard.nack(d.job_id, 'gone', retryable => false);
    END LOOP;
END $$;
SELECT count(syncguard.enqueue('plans', '{}', delay => '1 hour')) AS grown FROM generate_series(1, 3000);
BEGIN;
SELECT syncguard.enqueue('plans', '{}', dedupe_key => 'p') AS pj \gset
SELECT syncguard.enqueue('plans', '{}', dedupe_key => 'p') = :pj AS deduplicated;
SELECT job_id = :pj AS leased, attempt FROM syncguard.dequeue('plans');
SELECT syncguard.ack(:pj, 1);
SELECT syncguard.enqueue('plans', '{}') AS pk \gset
SELECT job_id = :pk AS leased FROM syncguard.dequeue('plans');
SELECT state FROM syncguard.nack(:pk, 'gone', retryable => false);
SELECT seq_scan, idx_scan > 0 AS by_index FROM pg_stat_xact_user_tables
 WHERE relid = 'syncguard.queue_jobs'::regclass;
COMMIT;
DELETE FROM syncguard.queue_jobs WHERE queue = 'plans';
