-- Failures that arrive after a send was accepted, per-user deferrals, and resends with a
-- fresh token (issue: real-platform fidelity).

-- A recipient deferred by a per-user limit (131049, 131056) is not sent before this time.
ALTER TABLE tokens ADD COLUMN not_before TEXT;
-- 1 when the message was accepted (a wamid) and a `failed` status settled it afterwards.
ALTER TABLE tokens ADD COLUMN failed_after_acceptance INTEGER NOT NULL DEFAULT 0;
-- The token a later run sent to the same phone in the same campaign instead of this one
-- (`bulk --retry-failed`, `--template`); this one stays valid for a late completion.
ALTER TABLE tokens ADD COLUMN superseded_by TEXT;

-- The campaign's member for a phone is its row that no other replaced.
DROP INDEX tokens_bulk_member;
CREATE UNIQUE INDEX tokens_bulk_member ON tokens(campaign, phone)
    WHERE origin = 'bulk' AND superseded_by IS NULL;

-- How a `failed` status settles its send, kept with a status that arrived before the send was
-- recorded (the status overtook the commit) so that recording the send applies it.
ALTER TABLE message_statuses ADD COLUMN settle_state TEXT;
ALTER TABLE message_statuses ADD COLUMN settle_retryable INTEGER;
ALTER TABLE message_statuses ADD COLUMN settle_not_before TEXT;
