-- Rollouts (docs/rollouts.md): one task on every agent of a target set frozen at creation,
-- in waves, within an error budget. A rollout's targets, each with its wave, status and task;
-- tasks carry the rollout they belong to. Idempotent like 0002–0007.
CREATE TABLE IF NOT EXISTS "rollouts" (
	"id" uuid PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"description" text,
	"status" text DEFAULT 'running' NOT NULL,
	"task_type" text NOT NULL,
	"task_payload" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"task_timeout_seconds" integer NOT NULL,
	"task_max_attempts" integer NOT NULL,
	"task_priority" smallint NOT NULL,
	"target" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"strategy" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"max_concurrency" integer NOT NULL,
	"max_errors" integer NOT NULL,
	"waves" integer[] NOT NULL,
	"bake_seconds" integer NOT NULL,
	"pause_between_waves" boolean NOT NULL,
	"delivery_timeout_seconds" integer NOT NULL,
	"target_count" integer NOT NULL,
	"wave" integer DEFAULT 1 NOT NULL,
	"wave_started_at" timestamp with time zone,
	"wave_ended_at" timestamp with time zone,
	"retry_of" uuid,
	"idempotency_key" text,
	"idempotency_owner" text,
	"idempotency_hash" text,
	"created_by" text NOT NULL,
	"version" integer DEFAULT 1 NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	"updated_at" timestamp with time zone NOT NULL,
	"ended_at" timestamp with time zone,
	CONSTRAINT "rollouts_max_concurrency_check" CHECK (max_concurrency >= 1),
	CONSTRAINT "rollouts_max_errors_check" CHECK (max_errors >= 0)
);
--> statement-breakpoint
CREATE TABLE IF NOT EXISTS "rollout_targets" (
	"rollout_id" uuid NOT NULL,
	"agent_id" uuid NOT NULL,
	"agent_name" text NOT NULL,
	"ordinal" integer NOT NULL,
	"wave" integer NOT NULL,
	"status" text DEFAULT 'waiting' NOT NULL,
	"task_id" uuid,
	"attempt" integer DEFAULT 0 NOT NULL,
	"dispatched_at" timestamp with time zone,
	"ended_at" timestamp with time zone,
	CONSTRAINT "rollout_targets_rollout_id_agent_id_pk" PRIMARY KEY("rollout_id","agent_id"),
	CONSTRAINT "rollout_targets_rollout_id_rollouts_id_fk" FOREIGN KEY ("rollout_id") REFERENCES "public"."rollouts"("id") ON DELETE cascade ON UPDATE no action
);
--> statement-breakpoint
ALTER TABLE "tasks" ADD COLUMN IF NOT EXISTS "rollout_id" uuid;--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "rollout_targets_status_idx" ON "rollout_targets" USING btree ("rollout_id","status","wave","ordinal");--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "rollout_targets_ordinal_idx" ON "rollout_targets" USING btree ("rollout_id","ordinal");--> statement-breakpoint
CREATE UNIQUE INDEX IF NOT EXISTS "rollouts_idempotency_key_idx" ON "rollouts" USING btree ("idempotency_owner","idempotency_key") WHERE idempotency_key IS NOT NULL;--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "rollouts_status_idx" ON "rollouts" USING btree ("status","id");--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "rollouts_open_idx" ON "rollouts" USING btree ("id") WHERE ended_at IS NULL;
