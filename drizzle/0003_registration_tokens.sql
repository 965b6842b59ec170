-- Registration tokens: only the SHA-256 of each secret is stored. Idempotent (IF NOT EXISTS)
-- like 0002, so a database that ran a development build of it migrates cleanly.
CREATE TABLE IF NOT EXISTS "registration_tokens" (
	"id" uuid PRIMARY KEY NOT NULL,
	"token_hash" text NOT NULL,
	"description" text,
	"labels" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"max_uses" integer,
	"uses" integer DEFAULT 0 NOT NULL,
	"expires_at" timestamp with time zone NOT NULL,
	"created_by" text NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	CONSTRAINT "registration_tokens_uses_check" CHECK (uses >= 0),
	CONSTRAINT "registration_tokens_max_uses_check" CHECK (max_uses IS NULL OR max_uses >= 1)
);
--> statement-breakpoint
CREATE UNIQUE INDEX IF NOT EXISTS "registration_tokens_token_hash_key" ON "registration_tokens" USING btree ("token_hash");--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "registration_tokens_expires_at_idx" ON "registration_tokens" USING btree ("expires_at");