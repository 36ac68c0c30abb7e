-- The database session (backend pid) that claimed a media download: a replica killed with
-- SIGKILL loses its session at once, and the downloads it had claimed are taken over at once
-- by another replica (or by the same one restarted) instead of after the claim's lease.
ALTER TABLE media ADD COLUMN claimed_pid INTEGER;
