-- Several `bulk` workers on one campaign. A worker CLAIMS the rows it is about to send: a row
-- is sent only by the worker named in `claimed_by`, and only while its lease
-- (`claimed_until`, renewed while the worker lives) runs. The lease is taken and compared on
-- the DATABASE's clock (`clock_timestamp()`), the one clock every machine shares, hence a
-- timestamptz here rather than the RFC 3339 text of the other columns. These columns exist on
-- PostgreSQL only (a SQLite campaign has one run at a time, under its lock file).
ALTER TABLE tokens ADD COLUMN claimed_by TEXT;
ALTER TABLE tokens ADD COLUMN claimed_until TIMESTAMPTZ;
CREATE INDEX tokens_claims ON tokens(claimed_by) WHERE claimed_until IS NOT NULL;

-- The shared send rate: one token bucket per sending number (PHONE_NUMBER_ID). Workers take
-- a few permits per round trip, under the row's lock, so `--rate 80` is 80 msg/s for the
-- number whatever the number of workers. `at` is the database's clock in epoch seconds.
CREATE TABLE bulk_rate (
    phone_number_id TEXT PRIMARY KEY,
    rate            DOUBLE PRECISION NOT NULL,
    burst           DOUBLE PRECISION NOT NULL,
    tokens          DOUBLE PRECISION NOT NULL,
    at              DOUBLE PRECISION NOT NULL
);
