-- pgbench: a bare SKIP LOCKED queue table, the baseline of benches/sections/queue.sh.
-- Enqueue one job, then take the oldest free job and delete it in one
-- transaction (the job is locked while it is being worked on). Under
-- concurrency SKIP LOCKED can find no job for a moment: then id is 0.
INSERT INTO queue_bench_bare (payload) VALUES ('{"n": 1}');
BEGIN;
SELECT coalesce((SELECT id FROM queue_bench_bare ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED), 0) AS id \gset
DELETE FROM queue_bench_bare WHERE id = :id;
COMMIT;
