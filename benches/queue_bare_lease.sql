-- pgbench: a bare SKIP LOCKED queue table with a visibility timeout, as
-- syncguard's queue has (benches/sections/queue.sh, for reference). Enqueue
-- one job; lease the oldest due job (a committed UPDATE of its visible_at, so
-- that a consumer that dies loses the job to the next dequeue after 30 s, not
-- for good); acknowledge it by deleting it. id is 0 when no job was free.
INSERT INTO queue_bench_lease (payload, visible_at) VALUES ('{"n": 1}', now());
WITH leased AS (
    UPDATE queue_bench_lease SET visible_at = now() + interval '30 seconds', attempts = attempts + 1
     WHERE id = (SELECT id FROM queue_bench_lease WHERE visible_at <= now()
                  ORDER BY visible_at LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING id, attempts)
SELECT coalesce(max(id), 0) AS id, coalesce(max(attempts), 0) AS attempt FROM leased \gset
DELETE FROM queue_bench_lease WHERE id = :id AND attempts = :attempt;
