DROP INDEX IF EXISTS "agents_heartbeat_idx";--> statement-breakpoint
DROP INDEX IF EXISTS "events_seq_key";--> statement-breakpoint
DROP INDEX IF EXISTS "events_task_idx";--> statement-breakpoint
DROP INDEX IF EXISTS "events_agent_idx";--> statement-breakpoint
DROP INDEX IF EXISTS "events_created_at_idx";--> statement-breakpoint
DROP INDEX IF EXISTS "tasks_idempotency_key_key";--> statement-breakpoint
-- Named so by a development build of this migration; gone from databases that ran it.
DROP INDEX IF EXISTS "tasks_idempotency_owner_key";--> statement-breakpoint
ALTER TABLE "tasks" ADD COLUMN IF NOT EXISTS "idempotency_owner" text;--> statement-breakpoint
ALTER TABLE "tasks" ADD COLUMN IF NOT EXISTS "idempotency_hash" text;--> statement-breakpoint
CREATE UNIQUE INDEX IF NOT EXISTS "events_seq_idx" ON "events" USING btree ("seq") WHERE seq IS NOT NULL;--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "events_task_seq_idx" ON "events" USING btree ("task_id","seq") WHERE seq IS NOT NULL;--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "events_agent_seq_idx" ON "events" USING btree ("agent_id","seq") WHERE seq IS NOT NULL;--> statement-breakpoint
CREATE UNIQUE INDEX IF NOT EXISTS "tasks_idempotency_key_idx" ON "tasks" USING btree ("idempotency_owner","idempotency_key") WHERE idempotency_key IS NOT NULL;
--> statement-breakpoint
-- Task counts: a statement that moved no task (a report refused, a fill that found nothing)
-- returns at once, and counters are sharded 256 ways by backend (was 16), so two busy
-- connections seldom wait on each other's counter rows until commit.
CREATE OR REPLACE FUNCTION task_counts_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NOT EXISTS (SELECT 1 FROM new_rows) THEN RETURN NULL; END IF;
    INSERT INTO task_counts (status, priority, shard, n)
    SELECT status, priority, (pg_backend_pid() % 256)::smallint, count(*) FROM new_rows
     GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (status, priority, shard) DO UPDATE SET n = task_counts.n + EXCLUDED.n;
  ELSIF TG_OP = 'DELETE' THEN
    IF NOT EXISTS (SELECT 1 FROM old_rows) THEN RETURN NULL; END IF;
    INSERT INTO task_counts (status, priority, shard, n)
    SELECT status, priority, (pg_backend_pid() % 256)::smallint, -count(*) FROM old_rows
     GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (status, priority, shard) DO UPDATE SET n = task_counts.n + EXCLUDED.n;
  ELSE
    IF NOT EXISTS (SELECT 1 FROM new_rows) THEN RETURN NULL; END IF;
    INSERT INTO task_counts (status, priority, shard, n)
    SELECT status, priority, (pg_backend_pid() % 256)::smallint, sum(d) FROM (
      SELECT status, priority, -1 AS d FROM old_rows
      UNION ALL
      SELECT status, priority, 1 AS d FROM new_rows
    ) moved
     GROUP BY 1, 2 HAVING sum(d) <> 0 ORDER BY 1, 2
    ON CONFLICT (status, priority, shard) DO UPDATE SET n = task_counts.n + EXCLUDED.n;
  END IF;
  RETURN NULL;
END
$$;
--> statement-breakpoint
-- Room on every agents page for the heartbeat's HOT update (a new row version on the same
-- page, no index touched). Pages written before this keep their old fill until rewritten.
ALTER TABLE agents SET (fillfactor = 50);
--> statement-breakpoint
-- The fit rule between an agent and a task (src/db/hot.ts uses it to fill agents from the
-- queue): a function, so the planner does not take its containment tests for nearly never
-- true and sort the whole pending queue instead of reading it in index order.
CREATE OR REPLACE FUNCTION task_fits(a_capabilities text[], a_provider text, a_region text, a_labels jsonb, a_id uuid,
                          t_capabilities text[], t_provider text, t_region text, t_labels jsonb, t_agent_id uuid)
RETURNS boolean LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
  RETURN a_capabilities @> t_capabilities
     AND (t_provider IS NULL OR a_provider = t_provider)
     AND (t_region IS NULL OR a_region = t_region)
     AND a_labels @> t_labels
     AND (t_agent_id IS NULL OR a_id = t_agent_id);
END
$$;
