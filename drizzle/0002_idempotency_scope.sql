DROP INDEX "tasks_idempotency_key_key";--> statement-breakpoint
ALTER TABLE "tasks" ADD COLUMN "idempotency_owner" text;--> statement-breakpoint
ALTER TABLE "tasks" ADD COLUMN "idempotency_hash" text;--> statement-breakpoint
CREATE UNIQUE INDEX "tasks_idempotency_owner_key" ON "tasks" USING btree ("idempotency_owner","idempotency_key");