-- One row per issued flow_token: the link between a completion and a phone number.
CREATE TABLE tokens (
    token           TEXT PRIMARY KEY,
    phone           TEXT NOT NULL,               -- E.164
    customer_name   TEXT,
    campaign        TEXT NOT NULL,
    origin          TEXT NOT NULL,               -- send | bulk | api
    initial_data    TEXT,                        -- JSON object handed to the first screen
    state           TEXT NOT NULL,               -- pending | sending | sent | failed | unknown
    attempts        INTEGER NOT NULL DEFAULT 0,
    message_id      TEXT,                        -- wamid of the accepted message
    wa_id           TEXT,                        -- WhatsApp id the send reply reported
    error_code      INTEGER,
    error_message   TEXT,
    error_retryable INTEGER,
    delivery        TEXT,                        -- latest of sent | delivered | read | failed
    delivery_rank   INTEGER NOT NULL DEFAULT 0,
    delivery_at     TEXT,
    delivery_error_code  INTEGER,
    delivery_error_title TEXT,
    flow_screen     TEXT,                        -- last screen answered through the endpoint
    flow_answers    TEXT,                        -- answers merged screen by screen (JSON object)
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    sent_at         TEXT,
    completed_at    TEXT
);
CREATE UNIQUE INDEX tokens_message_id ON tokens(message_id) WHERE message_id IS NOT NULL;
-- A bulk campaign messages each phone once, however often the run is restarted.
CREATE UNIQUE INDEX tokens_bulk_member ON tokens(campaign, phone) WHERE origin = 'bulk';
CREATE INDEX tokens_campaign ON tokens(campaign, state);

-- Completed Flows. At most one primary response per token; a second arrival of the same
-- completion by the other path is kept with duplicate_of set.
CREATE TABLE responses (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    token           TEXT,
    phone           TEXT,                        -- joined phone, or the sender's number when unmatched
    sender          TEXT,                        -- wa_id or business-scoped id from the webhook
    customer_name   TEXT,
    campaign        TEXT,
    source          TEXT NOT NULL,               -- endpoint | webhook
    answers         TEXT NOT NULL,               -- JSON object
    matched         INTEGER NOT NULL,
    sender_mismatch INTEGER NOT NULL DEFAULT 0,
    duplicate_of    INTEGER REFERENCES responses(id),
    event_id        TEXT,                        -- webhook message id (deduplication)
    completed_at    TEXT NOT NULL,
    received_at     TEXT NOT NULL
);
CREATE UNIQUE INDEX responses_event ON responses(event_id) WHERE event_id IS NOT NULL;
CREATE UNIQUE INDEX responses_primary ON responses(token)
    WHERE token IS NOT NULL AND duplicate_of IS NULL;
CREATE INDEX responses_completed ON responses(completed_at, id);

-- Every delivery status received, once per (message, status).
CREATE TABLE message_statuses (
    message_id   TEXT NOT NULL,
    status       TEXT NOT NULL,
    at           TEXT NOT NULL,
    recipient    TEXT,
    error_code   INTEGER,
    error_title  TEXT,
    matched      INTEGER NOT NULL,
    received_at  TEXT NOT NULL,
    PRIMARY KEY (message_id, status)
);

-- What could not be joined or is not an answer: error notifications, alerts, unknown events.
CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,
    token       TEXT,
    reference   TEXT,
    detail      TEXT NOT NULL,
    received_at TEXT NOT NULL
);
CREATE INDEX events_kind ON events(kind, id);

-- Signed webhook bodies, stored before the 200 so that nothing acknowledged is lost.
CREATE TABLE webhook_inbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    body         BLOB NOT NULL,
    received_at  TEXT NOT NULL,
    processed_at TEXT,
    error        TEXT
);
CREATE INDEX webhook_inbox_pending ON webhook_inbox(id) WHERE processed_at IS NULL;
