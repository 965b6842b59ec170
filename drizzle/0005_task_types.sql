-- Placement by task type: the types an agent runs ('*' = any; every agent registered
-- before this runs any type, as it did), and the agents that declined a task (it is not
-- offered to them again). Idempotent like 0002–0004. Adding a column with a constant
-- default rewrites nothing (Postgres 11+).
ALTER TABLE "agents" ADD COLUMN IF NOT EXISTS "task_types" text[] DEFAULT '{*}'::text[] NOT NULL;--> statement-breakpoint
ALTER TABLE "tasks" ADD COLUMN IF NOT EXISTS "declined_by" uuid[] DEFAULT '{}'::uuid[] NOT NULL;
