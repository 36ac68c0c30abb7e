-- Flow media (PhotoPicker, DocumentPicker): one row per uploaded file, a download job until it
-- is done or failed.

CREATE TABLE media (
    id INTEGER PRIMARY KEY,
    token TEXT NOT NULL,
    -- The answer key the file came under.
    field TEXT NOT NULL,
    -- Meta's id of the upload.
    media_id TEXT NOT NULL,
    -- The name on the person's device (untrusted; never a path).
    file_name TEXT,
    -- `cdn`: an encrypted file on WhatsApp's CDN (the data endpoint's descriptor);
    -- `graph`: a Cloud API media id (a completion message's file).
    kind TEXT NOT NULL DEFAULT 'cdn',
    -- Where the encrypted file is, and its encryption_metadata (JSON): kept only while the
    -- download is pending, cleared once it is done or failed.
    cdn_url TEXT,
    encryption TEXT,
    -- A Graph media file's SHA-256 and MIME type, as the completion message gave them.
    sha256 TEXT,
    mime_type TEXT,
    -- pending | done | failed
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    -- The stored, decrypted file and its size (done).
    path TEXT,
    size INTEGER,
    -- Why the last attempt failed (a retry pending, or failed for good).
    error TEXT,
    created_at TEXT NOT NULL,
    finished_at TEXT,
    UNIQUE (token, media_id)
);

CREATE INDEX media_due ON media(next_attempt_at) WHERE state = 'pending';
