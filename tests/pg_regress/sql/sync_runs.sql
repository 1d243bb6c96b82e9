-- Sync runs: a scripted history of parts failing and succeeding over several
-- runs, the watermarks it must produce, the health figures and alerts, and
-- every error. Run ids and times vary from run to run: they are kept in psql
-- variables and compared in SQL, never printed.

-- The watermark of a source, as which run's start it is ('none' when NULL).
CREATE FUNCTION pg_temp.watermark(src text) RETURNS text LANGUAGE sql AS $$
    SELECT coalesce((SELECT 'start of run ' || r.run_id
                       FROM syncguard.sync_runs r JOIN syncguard.sync_sources s USING (source)
                      WHERE s.source = src AND r.started_at = s.watermark),
                    CASE WHEN (SELECT watermark FROM syncguard.sync_sources WHERE source = src) IS NULL
                         THEN 'none' ELSE 'some other time' END)
$$;

-- Run 1: first run of 'crm' with three declared parts; since is NULL (fetch everything).
SELECT run_id AS r1, since IS NULL AS fetch_everything
  FROM syncguard.sync_begin('crm', ARRAY['contacts', 'deals', 'notes']) \gset
SELECT :'fetch_everything' AS first_run_fetches_everything;
SELECT syncguard.sync_part(:r1, 'contacts', true, records => 120, latency => '1 second');
SELECT syncguard.sync_part(:r1, 'deals', false, 'HTTP 503 from /deals', latency => '9 seconds');
-- 'notes' never reports. The run fails, the watermark stays unset.
SELECT syncguard.sync_finish(:r1) AS r1_advanced;
SELECT status, advanced, error FROM syncguard.sync_runs WHERE run_id = :r1;
SELECT pg_temp.watermark('crm') AS after_r1;
-- Finishing again changes nothing and answers the same.
SELECT syncguard.sync_finish(:r1) AS r1_again;
-- A finished run takes no more reports.
SELECT regress.err_masked(format('SELECT syncguard.sync_part(%s, %L, true)', :r1, 'notes'));

-- Run 2: everything again from the start (since still NULL); a part fails
-- first and succeeds on its retry inside the run: its last report counts.
SELECT run_id AS r2, since IS NULL AS r2_fetches_everything
  FROM syncguard.sync_begin('crm', ARRAY['contacts', 'deals', 'notes']) \gset
SELECT :'r2_fetches_everything' AS r2_fetches_everything;
SELECT syncguard.sync_part(:r2, 'contacts', true, records => 130, latency => '1 second');
SELECT syncguard.sync_part(:r2, 'deals', false, 'timeout', latency => '3 seconds');
SELECT syncguard.sync_part(:r2, 'deals', true, records => 40, latency => '2 seconds');
SELECT syncguard.sync_part(:r2, 'notes', true, records => 7, latency => '1 second');
SELECT part, ok, reports, records FROM syncguard.sync_parts WHERE run_id = :r2 ORDER BY part;
SELECT syncguard.sync_finish(:r2) AS r2_advanced;
SELECT pg_temp.watermark('crm') AS after_r2;

-- Run 3: an overlap of 5 minutes; since is the watermark minus it.
SELECT (syncguard.sync_configure('crm', overlap => '5 minutes')).overlap;
SELECT run_id AS r3, since AS r3_since FROM syncguard.sync_begin('crm', ARRAY['contacts', 'deals']) \gset
SELECT :'r3_since'::timestamptz = (SELECT started_at - interval '5 minutes' FROM syncguard.sync_runs WHERE run_id = :r2)
       AS since_is_r2_start_minus_overlap;
-- One run per source at a time.
SELECT regress.err_masked($$SELECT syncguard.sync_begin('crm')$$);
-- Parts must be declared ones.
SELECT regress.err_masked(format('SELECT syncguard.sync_part(%s, %L, true)', :r3, 'notes'));
SELECT syncguard.sync_part(:r3, 'contacts', true, records => 5, latency => '1 second');
SELECT syncguard.sync_part(:r3, 'deals', false, 'HTTP 429', latency => '8 seconds');
SELECT syncguard.sync_finish(:r3) AS r3_advanced;
SELECT pg_temp.watermark('crm') AS after_r3_still_r2;

-- Run 4 catches up from the same point, and succeeds.
SELECT run_id AS r4, since AS r4_since FROM syncguard.sync_begin('crm', ARRAY['contacts', 'deals']) \gset
SELECT :'r4_since'::timestamptz = :'r3_since'::timestamptz AS r4_fetches_from_where_r3_did;
SELECT syncguard.sync_part(:r4, 'contacts', true, records => 6, latency => '1 second');
SELECT syncguard.sync_part(:r4, 'deals', true, records => 50, latency => '2 seconds');
SELECT syncguard.sync_finish(:r4) AS r4_advanced;
SELECT pg_temp.watermark('crm') AS after_r4;

-- Run 5 is not finished within its timeout: the next sync_begin abandons it,
-- and its late finish does not advance.
SELECT (syncguard.sync_configure('crm', run_timeout => '10 milliseconds')).run_timeout;
SELECT run_id AS r5 FROM syncguard.sync_begin('crm') \gset
SELECT syncguard.sync_part(:r5, 'contacts', true, records => 1, latency => '1 second');
SELECT pg_sleep(0.05);
SELECT (syncguard.sync_configure('crm', run_timeout => '1 hour')).run_timeout;
SELECT run_id AS r6 FROM syncguard.sync_begin('crm') \gset
SELECT status, advanced, error LIKE 'not finished within % (deadline %)' AS says_why
  FROM syncguard.sync_runs WHERE run_id = :r5;
SELECT syncguard.sync_finish(:r5) AS r5_late_finish;
SELECT regress.err_masked(format('SELECT syncguard.sync_part(%s, %L, true)', :r5, 'deals'));
SELECT pg_temp.watermark('crm') AS after_r5_still_r4;
-- Run 6 has no declared parts: it succeeds when every reported part is ok.
SELECT syncguard.sync_part(:r6, 'everything', true, records => 2, latency => '500 milliseconds');
SELECT syncguard.sync_finish(:r6) AS r6_advanced;
SELECT pg_temp.watermark('crm') AS after_r6;

-- Health: 6 runs, 3 failed (r1 and r3 failed, r5 abandoned): error rate 0.5
-- above the default 10 %; part latency avg and p95 over the 11 parts (the
-- last report of each counts); records of ok parts.
SELECT source, runs, failures, error_rate, avg_latency, p95_latency, records, running, stale,
       error_rate_alert, latency_alert, last_success_at >= watermark AS success_after_watermark,
       watermark_lag >= interval '0' AS lags, date_trunc('second', watermark) = watermark AS to_the_second
  FROM syncguard.sync_health WHERE source = 'crm';
SELECT round(extract(epoch FROM avg(latency))::numeric, 4) AS avg_check,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY latency) AS p95_check
  FROM syncguard.sync_parts WHERE source = 'crm';
SELECT kind, name, alert, detail FROM syncguard.sync_alerts WHERE name = 'crm' ORDER BY alert;

-- Thresholds per source: with 60 % tolerated and a 3 s average allowed the
-- source is healthy; a long silence makes it stale.
SELECT (syncguard.sync_configure('crm', max_error_rate => 0.6, max_avg_latency => '3 seconds')).max_error_rate;
SELECT count(*) AS alerts_after_tuning FROM syncguard.sync_alerts WHERE name = 'crm';
UPDATE syncguard.sync_sources SET last_success_at = now() - interval '2 hours' WHERE source = 'crm';
SELECT stale FROM syncguard.sync_health WHERE source = 'crm';
SELECT kind, name, alert, regexp_replace(detail, 'since .* \(', 'since <time> (') AS detail
  FROM syncguard.sync_alerts WHERE name = 'crm';

-- A source that never succeeded is stale once max_silence has passed since it was created.
SELECT run_id AS n1 FROM syncguard.sync_begin('never-ok') \gset
SELECT syncguard.sync_part(:n1, 'all', false, 'DNS failure');
SELECT syncguard.sync_finish(:n1);
UPDATE syncguard.sync_sources SET created_at = now() - interval '90 minutes' WHERE source = 'never-ok';
SELECT alert, detail FROM syncguard.sync_alerts WHERE name = 'never-ok' ORDER BY alert;

-- sync_abandon_stale marks runs past their deadline, of every source.
SELECT (syncguard.sync_configure('sleepy', run_timeout => '10 milliseconds')).source;
SELECT run_id AS s1 FROM syncguard.sync_begin('sleepy') \gset
SELECT pg_sleep(0.05);
SELECT syncguard.sync_abandon_stale() AS abandoned;
SELECT status FROM syncguard.sync_runs WHERE run_id = :s1;

-- Errors.
SELECT regress.err_masked($$SELECT syncguard.sync_begin(NULL)$$);
SELECT regress.err_masked($$SELECT syncguard.sync_begin('')$$);
SELECT regress.err_masked($$SELECT syncguard.sync_begin('x', ARRAY['a', 'a'])$$);
SELECT regress.err_masked($$SELECT syncguard.sync_begin('x', ARRAY['a', NULL])$$);
SELECT regress.err_masked($$SELECT syncguard.sync_begin('x', '{}')$$);
SELECT regress.err_masked($$SELECT syncguard.sync_part(NULL, 'a', true)$$);
SELECT regress.err_masked($$SELECT syncguard.sync_part(-1, 'a', true)$$);
SELECT regress.err_masked($$SELECT syncguard.sync_part(-1, NULL, true)$$);
SELECT regress.err_masked(format('SELECT syncguard.sync_part(%s, %L, true, records => -1)', :r6, 'a'));
SELECT regress.err_masked($$SELECT syncguard.sync_finish(NULL)$$);
SELECT regress.err_masked($$SELECT syncguard.sync_configure(NULL)$$);
-- A run that reported no part (its job failed first, then called sync_finish
-- in a finally block) fails and keeps the watermark.
SELECT run_id AS r_empty FROM syncguard.sync_begin('empty_src') \gset
SELECT syncguard.sync_finish(:r_empty) AS advanced;
SELECT status, error, (SELECT watermark FROM syncguard.sync_sources WHERE source = 'empty_src') AS watermark
  FROM syncguard.sync_runs WHERE run_id = :r_empty;
SELECT regress.err_masked($$SELECT syncguard.sync_finish(-1)$$);
SELECT regress.err_masked($$SELECT syncguard.sync_configure('crm', overlap => '-1 minute')$$);
SELECT regress.err_masked($$SELECT syncguard.sync_configure('crm', max_error_rate => 1.5)$$);
SELECT regress.err_masked($$SELECT syncguard.sync_configure('crm', run_timeout => '0')$$);
