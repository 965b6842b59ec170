-- Placement by requirement class (docs/scheduler.md, "The queue by shape"). A task's
-- shape is its type plus the requirements every agent either meets or not (capabilities,
-- provider, region, labels); tasks pinned to an agent are queued by that agent instead.
-- The fill reads only the shapes an agent fits, then each of those shapes' queue in
-- order, so tasks nothing can take cost nothing per heartbeat, create or sweep.
-- Idempotent like 0002–0006. Adding the stored column rewrites the tasks table once.
-- Three indexes no query needs any more go: every status change of a task wrote an entry
-- in each (docs/performance.md, "Indexes of tasks"): the old queue (replaced by the shape
-- and pinned queues), pending tasks by age (the oldest pending task is the first pending id:
-- ids are UUIDv7, in creation order) and priority (a list filter on ten values, served by
-- walking the primary key).
CREATE OR REPLACE FUNCTION "task_shape"("type" text, "caps" text[], "provider" text, "region" text, "labels" jsonb)
RETURNS uuid LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT md5(jsonb_build_array("type",
    (SELECT coalesce(jsonb_agg(DISTINCT c ORDER BY c), '[]'::jsonb) FROM unnest("caps") AS c),
    "provider", "region", "labels")::text)::uuid
$$;--> statement-breakpoint
ALTER TABLE "tasks" ADD COLUMN IF NOT EXISTS "shape" uuid GENERATED ALWAYS AS (task_shape("type", "req_capabilities", "req_provider", "req_region", "req_labels")) STORED;--> statement-breakpoint
CREATE TABLE IF NOT EXISTS "task_shapes" (
	"id" uuid PRIMARY KEY NOT NULL,
	"type" text NOT NULL,
	"req_capabilities" text[] NOT NULL,
	"req_provider" text,
	"req_region" text,
	"req_labels" jsonb NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	"empty_since" timestamp with time zone
);--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "tasks_shape_queue_idx" ON "tasks" USING btree ("shape","priority" DESC NULLS LAST,"id") WHERE status = 'pending' AND req_agent_id IS NULL;--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "tasks_pinned_queue_idx" ON "tasks" USING btree ("req_agent_id","priority" DESC NULLS LAST,"id") WHERE status = 'pending' AND req_agent_id IS NOT NULL;--> statement-breakpoint
INSERT INTO "task_shapes" ("id", "type", "req_capabilities", "req_provider", "req_region", "req_labels", "created_at")
SELECT DISTINCT ON ("shape") "shape", "type", "req_capabilities", "req_provider", "req_region", "req_labels", now()
  FROM "tasks" WHERE "status" IN ('pending', 'assigned', 'running') AND "req_agent_id" IS NULL
ON CONFLICT ("id") DO NOTHING;
--> statement-breakpoint
DROP INDEX IF EXISTS "tasks_pending_queue_idx";--> statement-breakpoint
DROP INDEX IF EXISTS "tasks_pending_age_idx";--> statement-breakpoint
DROP INDEX IF EXISTS "tasks_priority_idx";
--> statement-breakpoint
-- No JIT for this database's sessions: the hot statements run in well under a millisecond,
-- but a fill's row estimates over a long queue can pass jit_above_cost, and compiling took
-- 0.2–1.5 s a statement (docs/decisions.md, "No JIT"). Skipped, with a notice, where the
-- migrating role may not alter the database; Node and Bun also turn it off per connection.
DO $$
BEGIN
  EXECUTE format('ALTER DATABASE %I SET jit = off', current_database());
EXCEPTION WHEN OTHERS THEN
  RAISE NOTICE 'jit left as it is (%): %', SQLSTATE, SQLERRM;
END $$;
