-- Reliability: the stretches the service could not hear agents (deadlines move by them),
-- and the attempt that may still run after a timeout or an unconfirmed cancel (no retry is
-- placed beside it). Idempotent like 0002–0005.
CREATE TABLE IF NOT EXISTS "service_stalls" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "service_stalls_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"started_at" timestamp with time zone NOT NULL,
	"ended_at" timestamp with time zone NOT NULL,
	"cause" text NOT NULL,
	"observer" text NOT NULL,
	CONSTRAINT "service_stalls_order_check" CHECK (ended_at >= started_at)
);
--> statement-breakpoint
ALTER TABLE "tasks" ADD COLUMN IF NOT EXISTS "live_agent_id" uuid;--> statement-breakpoint
ALTER TABLE "tasks" ADD COLUMN IF NOT EXISTS "live_until" timestamp with time zone;--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "service_stalls_ended_at_idx" ON "service_stalls" USING btree ("ended_at");
