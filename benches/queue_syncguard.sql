-- pgbench: syncguard's retry queue, benches/sections/queue.sh. Enqueue one
-- job, lease the oldest due job, acknowledge it (with its attempt number).
-- Under concurrency SKIP LOCKED can find no job for a moment: then job_id is 0.
SELECT syncguard.enqueue('bench', '{"n": 1}');
SELECT coalesce(d.job_id, 0) AS job_id, coalesce(d.attempt, 0) AS attempt
  FROM (SELECT) AS one LEFT JOIN syncguard.dequeue('bench') AS d ON true \gset
\if :job_id
SELECT syncguard.ack(:job_id, :attempt);
\endif
