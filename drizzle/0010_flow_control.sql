-- Flow control (docs/scheduler.md, "Concurrency keys" and "Fair share"). A task may carry a
-- concurrency key (at most `limit` tasks of one key assigned or running at once, fleet-wide)
-- and a fairness key (placement alternates between tenants within a priority). The key table
-- holds each key's limit (set by the newest create) and its count of live tasks, moved in the
-- same statement as every assignment and every end, requeue or loss, and recounted by the
-- sweep. A task's shape now also names its fairness and concurrency keys, so each tenant's
-- tasks form their own queue (one index scan per shape, as before); a task with neither key
-- keeps the shape it had. Idempotent like 0002–0008. Re-deriving the stored shape column
-- rewrites the tasks table once.
CREATE OR REPLACE FUNCTION "task_shape_keyed"("type" text, "caps" text[], "provider" text, "region" text, "labels" jsonb,
  "fairness_key" text, "concurrency_key" text)
RETURNS uuid LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN "fairness_key" IS NULL AND "concurrency_key" IS NULL
    THEN task_shape("type", "caps", "provider", "region", "labels")
    ELSE md5(jsonb_build_array("type",
      (SELECT coalesce(jsonb_agg(DISTINCT c ORDER BY c), '[]'::jsonb) FROM unnest("caps") AS c),
      "provider", "region", "labels", "fairness_key", "concurrency_key")::text)::uuid END
$$;--> statement-breakpoint
ALTER TABLE "tasks" ADD COLUMN IF NOT EXISTS "concurrency_key" text;--> statement-breakpoint
ALTER TABLE "tasks" ADD COLUMN IF NOT EXISTS "concurrency_limit" integer;--> statement-breakpoint
ALTER TABLE "tasks" ADD COLUMN IF NOT EXISTS "fairness_key" text;--> statement-breakpoint
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
                  WHERE d.adrelid = 'tasks'::regclass AND a.attname = 'shape'
                    AND pg_get_expr(d.adbin, d.adrelid) LIKE '%task_shape_keyed%') THEN
    ALTER TABLE "tasks" DROP COLUMN IF EXISTS "shape";
    ALTER TABLE "tasks" ADD COLUMN "shape" uuid GENERATED ALWAYS AS (task_shape_keyed("type", "req_capabilities",
      "req_provider", "req_region", "req_labels", "fairness_key", "concurrency_key")) STORED;
  END IF;
END $$;--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "tasks_shape_queue_idx" ON "tasks" USING btree ("shape","priority" DESC NULLS LAST,"id") WHERE status = 'pending' AND req_agent_id IS NULL;--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "tasks_concurrency_idx" ON "tasks" USING btree ("concurrency_key","status") WHERE concurrency_key IS NOT NULL AND status IN ('pending', 'assigned', 'running');--> statement-breakpoint
ALTER TABLE "task_shapes" ADD COLUMN IF NOT EXISTS "fair_group" text;--> statement-breakpoint
ALTER TABLE "task_shapes" ADD COLUMN IF NOT EXISTS "concurrency_key" text;--> statement-breakpoint
CREATE TABLE IF NOT EXISTS "concurrency_keys" (
	"key" text PRIMARY KEY NOT NULL,
	"key_limit" integer NOT NULL,
	"active" integer DEFAULT 0 NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	"updated_at" timestamp with time zone NOT NULL,
	CONSTRAINT "concurrency_keys_limit_check" CHECK ("key_limit" >= 1),
	CONSTRAINT "concurrency_keys_active_check" CHECK ("active" >= 0)
);
