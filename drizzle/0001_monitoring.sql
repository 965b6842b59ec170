-- Task counts by status and priority for statistics (table task_counts), kept in the same
-- transaction as every change to tasks by statement-level triggers over transition tables:
-- one set-based upsert per statement, whatever its size. Rows are sharded by backend
-- (pg_backend_pid() % 16) so concurrent writers seldom wait on the same counter row, and
-- keys are written in sorted order so two writers can never deadlock on them.
CREATE FUNCTION task_counts_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO task_counts (status, priority, shard, n)
    SELECT status, priority, (pg_backend_pid() % 16)::smallint, count(*) FROM new_rows
     GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (status, priority, shard) DO UPDATE SET n = task_counts.n + EXCLUDED.n;
  ELSIF TG_OP = 'DELETE' THEN
    INSERT INTO task_counts (status, priority, shard, n)
    SELECT status, priority, (pg_backend_pid() % 16)::smallint, -count(*) FROM old_rows
     GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (status, priority, shard) DO UPDATE SET n = task_counts.n + EXCLUDED.n;
  ELSE
    INSERT INTO task_counts (status, priority, shard, n)
    SELECT status, priority, (pg_backend_pid() % 16)::smallint, sum(d) FROM (
      SELECT status, priority, -1 AS d FROM old_rows
      UNION ALL
      SELECT status, priority, 1 AS d FROM new_rows
    ) moved
     GROUP BY 1, 2 HAVING sum(d) <> 0 ORDER BY 1, 2
    ON CONFLICT (status, priority, shard) DO UPDATE SET n = task_counts.n + EXCLUDED.n;
  END IF;
  RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION task_counts_apply();
--> statement-breakpoint
CREATE TRIGGER tasks_count_update AFTER UPDATE ON tasks
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION task_counts_apply();
--> statement-breakpoint
CREATE TRIGGER tasks_count_delete AFTER DELETE ON tasks
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION task_counts_apply();
--> statement-breakpoint
-- Tasks that existed before these triggers.
INSERT INTO task_counts (status, priority, shard, n)
SELECT status, priority, 0, count(*) FROM tasks GROUP BY 1, 2;
--> statement-breakpoint
-- The event id high-water mark (one row), continuing from any event already numbered.
INSERT INTO event_sequence (id, last) SELECT 1, coalesce(max(seq), 0) FROM events;
