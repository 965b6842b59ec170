-- Task output (agents' log chunks) and per-attempt totals. Idempotent (IF NOT EXISTS, the
-- foreign keys inline) like 0002 and 0003.
CREATE TABLE IF NOT EXISTS "task_log_totals" (
	"task_id" uuid NOT NULL,
	"attempt" integer NOT NULL,
	"bytes" bigint DEFAULT 0 NOT NULL,
	"dropped_bytes" bigint DEFAULT 0 NOT NULL,
	"dropped_chunks" integer DEFAULT 0 NOT NULL,
	"dropped_from" integer,
	"dropped_to" integer,
	CONSTRAINT "task_log_totals_task_id_attempt_pk" PRIMARY KEY("task_id","attempt"),
	CONSTRAINT "task_log_totals_task_id_tasks_id_fk" FOREIGN KEY ("task_id") REFERENCES "public"."tasks"("id") ON DELETE cascade
);
--> statement-breakpoint
CREATE TABLE IF NOT EXISTS "task_logs" (
	"task_id" uuid NOT NULL,
	"attempt" integer NOT NULL,
	"seq" integer NOT NULL,
	"stream" text NOT NULL,
	"data" text NOT NULL,
	"bytes" integer NOT NULL,
	"at" timestamp with time zone NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	CONSTRAINT "task_logs_task_id_attempt_seq_pk" PRIMARY KEY("task_id","attempt","seq"),
	CONSTRAINT "task_logs_task_id_tasks_id_fk" FOREIGN KEY ("task_id") REFERENCES "public"."tasks"("id") ON DELETE cascade,
	CONSTRAINT "task_logs_stream_check" CHECK (stream IN ('stdout', 'stderr', 'system'))
);
--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "task_logs_created_at_idx" ON "task_logs" USING btree ("created_at");
