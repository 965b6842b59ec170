-- Fleet maintenance (docs/scheduler.md, "Drain and quarantine"): a drain with a deadline and
-- the status it ends in, quarantine (by hand, timed, or automatic from a streak of failed
-- attempts), and the drain's stop request on the tasks a drained agent still holds at its
-- deadline. Idempotent like 0002–0008.
ALTER TABLE "agents" ADD COLUMN IF NOT EXISTS "drain_then" text;--> statement-breakpoint
ALTER TABLE "agents" ADD COLUMN IF NOT EXISTS "drain_deadline" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "agents" ADD COLUMN IF NOT EXISTS "quarantine_reason" text;--> statement-breakpoint
ALTER TABLE "agents" ADD COLUMN IF NOT EXISTS "quarantined_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "agents" ADD COLUMN IF NOT EXISTS "quarantine_until" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "agents" ADD COLUMN IF NOT EXISTS "fail_streak" jsonb DEFAULT '[]'::jsonb NOT NULL;--> statement-breakpoint
ALTER TABLE "tasks" ADD COLUMN IF NOT EXISTS "drain_requested_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "scheduler_state" ADD COLUMN IF NOT EXISTS "failing_everywhere_at" timestamp with time zone;
--> statement-breakpoint
-- The sweep's drain requeue reads the few tasks with a drain stop asked; no other task has an entry.
CREATE INDEX IF NOT EXISTS "tasks_drain_requested_idx" ON "tasks" USING btree ("drain_requested_at") WHERE drain_requested_at IS NOT NULL;
