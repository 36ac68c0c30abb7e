-- People who asked not to be messaged (a STOP reply, Meta's marketing-preference webhook, a
-- 131050 refusal, or `flowctl suppress add|import`). One row per person: `key` is the
-- number in the form Meta spells its WhatsApp id (see phone::whatsapp_form), so that a
-- Brazilian or Mexican number matches whichever spelling reached us; `phone` is the number
-- as it was given. Lifting an opt-out deletes the row.
CREATE TABLE suppressions (
    key     TEXT PRIMARY KEY,
    phone   TEXT NOT NULL,
    reason  TEXT NOT NULL,
    source  TEXT NOT NULL,
    at      TEXT NOT NULL
);
CREATE INDEX suppressions_at ON suppressions(at);
