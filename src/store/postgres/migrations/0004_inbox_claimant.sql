-- The database session (backend pid) that claimed an inbox row: a replica killed with SIGKILL
-- loses its session at once, and the rows it had claimed are taken over at once by another
-- replica (or by the same one restarted) instead of after the claim's lease.
ALTER TABLE webhook_inbox ADD COLUMN claimed_pid INTEGER;
