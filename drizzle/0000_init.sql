CREATE TABLE "agents" (
	"id" uuid PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"description" text,
	"provider" text NOT NULL,
	"region" text,
	"capabilities" text[] DEFAULT '{}'::text[] NOT NULL,
	"labels" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"max_concurrent_tasks" integer DEFAULT 1 NOT NULL,
	"active_tasks" integer DEFAULT 0 NOT NULL,
	"status" text DEFAULT 'offline' NOT NULL,
	"last_heartbeat_at" timestamp with time zone,
	"last_metrics" jsonb,
	"token_version" integer DEFAULT 1 NOT NULL,
	"version" integer DEFAULT 1 NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	"updated_at" timestamp with time zone NOT NULL,
	CONSTRAINT "agents_active_tasks_check" CHECK (active_tasks >= 0),
	CONSTRAINT "agents_max_concurrent_check" CHECK (max_concurrent_tasks >= 1)
);
--> statement-breakpoint
CREATE TABLE "event_sequence" (
	"id" integer PRIMARY KEY DEFAULT 1 NOT NULL,
	"last" bigint DEFAULT 0 NOT NULL
);
--> statement-breakpoint
CREATE TABLE "events" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "events_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"seq" bigint,
	"type" text NOT NULL,
	"agent_id" uuid,
	"task_id" uuid,
	"data" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"created_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "scheduler_state" (
	"id" integer PRIMARY KEY DEFAULT 1 NOT NULL,
	"last_run_at" timestamp with time zone,
	"last_summary" jsonb,
	"runs" bigint DEFAULT 0 NOT NULL
);
--> statement-breakpoint
CREATE TABLE "task_counts" (
	"status" text NOT NULL,
	"priority" smallint NOT NULL,
	"shard" smallint NOT NULL,
	"n" bigint DEFAULT 0 NOT NULL,
	CONSTRAINT "task_counts_status_priority_shard_pk" PRIMARY KEY("status","priority","shard")
);
--> statement-breakpoint
CREATE TABLE "tasks" (
	"id" uuid PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"type" text NOT NULL,
	"payload" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"priority" smallint DEFAULT 5 NOT NULL,
	"req_capabilities" text[] DEFAULT '{}'::text[] NOT NULL,
	"req_provider" text,
	"req_region" text,
	"req_labels" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"req_agent_id" uuid,
	"agent_id" uuid,
	"status" text DEFAULT 'pending' NOT NULL,
	"attempt" integer DEFAULT 0 NOT NULL,
	"max_attempts" integer DEFAULT 3 NOT NULL,
	"failures" integer DEFAULT 0 NOT NULL,
	"lost_count" integer DEFAULT 0 NOT NULL,
	"timeout_seconds" integer DEFAULT 300 NOT NULL,
	"scheduled_at" timestamp with time zone,
	"available_at" timestamp with time zone NOT NULL,
	"idempotency_key" text,
	"cancel_requested" boolean DEFAULT false NOT NULL,
	"cancel_requested_at" timestamp with time zone,
	"deadline_at" timestamp with time zone,
	"auto_retry" boolean DEFAULT false NOT NULL,
	"progress" real,
	"result" jsonb,
	"error" jsonb,
	"version" integer DEFAULT 1 NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	"assigned_at" timestamp with time zone,
	"started_at" timestamp with time zone,
	"finished_at" timestamp with time zone,
	"updated_at" timestamp with time zone NOT NULL,
	CONSTRAINT "tasks_priority_check" CHECK (priority BETWEEN 1 AND 10),
	CONSTRAINT "tasks_attempt_check" CHECK (attempt >= 0)
);
--> statement-breakpoint
CREATE UNIQUE INDEX "agents_name_key" ON "agents" USING btree ("name");--> statement-breakpoint
CREATE INDEX "agents_status_idx" ON "agents" USING btree ("status","id");--> statement-breakpoint
CREATE INDEX "agents_provider_idx" ON "agents" USING btree ("provider","id");--> statement-breakpoint
CREATE INDEX "agents_region_idx" ON "agents" USING btree ("region","id");--> statement-breakpoint
CREATE INDEX "agents_capabilities_idx" ON "agents" USING gin ("capabilities");--> statement-breakpoint
CREATE INDEX "agents_heartbeat_idx" ON "agents" USING btree ("last_heartbeat_at") WHERE status <> 'offline';--> statement-breakpoint
CREATE UNIQUE INDEX "events_seq_key" ON "events" USING btree ("seq");--> statement-breakpoint
CREATE INDEX "events_unsequenced_idx" ON "events" USING btree ("id") WHERE seq IS NULL;--> statement-breakpoint
CREATE INDEX "events_task_idx" ON "events" USING btree ("task_id","seq");--> statement-breakpoint
CREATE INDEX "events_agent_idx" ON "events" USING btree ("agent_id","seq");--> statement-breakpoint
CREATE INDEX "events_created_at_idx" ON "events" USING btree ("created_at");--> statement-breakpoint
CREATE UNIQUE INDEX "tasks_idempotency_key_key" ON "tasks" USING btree ("idempotency_key");--> statement-breakpoint
CREATE INDEX "tasks_status_idx" ON "tasks" USING btree ("status","id");--> statement-breakpoint
CREATE INDEX "tasks_agent_idx" ON "tasks" USING btree ("agent_id","id");--> statement-breakpoint
CREATE INDEX "tasks_agent_active_idx" ON "tasks" USING btree ("agent_id") WHERE status IN ('assigned', 'running');--> statement-breakpoint
CREATE INDEX "tasks_type_idx" ON "tasks" USING btree ("type","id");--> statement-breakpoint
CREATE INDEX "tasks_priority_idx" ON "tasks" USING btree ("priority","id");--> statement-breakpoint
CREATE INDEX "tasks_pending_queue_idx" ON "tasks" USING btree ("priority" DESC NULLS LAST,"id") WHERE status = 'pending';--> statement-breakpoint
CREATE INDEX "tasks_running_deadline_idx" ON "tasks" USING btree ("deadline_at") WHERE status = 'running';--> statement-breakpoint
CREATE INDEX "tasks_cancel_requested_idx" ON "tasks" USING btree ("cancel_requested_at") WHERE status = 'running' AND cancel_requested;--> statement-breakpoint
CREATE INDEX "tasks_assigned_at_idx" ON "tasks" USING btree ("assigned_at") WHERE status = 'assigned';--> statement-breakpoint
CREATE INDEX "tasks_auto_retry_idx" ON "tasks" USING btree ("id") WHERE auto_retry;--> statement-breakpoint
CREATE INDEX "tasks_finished_idx" ON "tasks" USING btree ("finished_at","status") WHERE finished_at IS NOT NULL;--> statement-breakpoint
CREATE INDEX "tasks_pending_age_idx" ON "tasks" USING btree ("created_at") WHERE status = 'pending';