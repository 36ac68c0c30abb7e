-- The order tokens were issued in, to list the tokens of one millisecond as SQLite does (by
-- rowid). No table rewrite: the column is added without a default, so existing rows keep
-- NULL (ordered by token among themselves, as before) and every new row takes the next value.
CREATE SEQUENCE tokens_seq;
ALTER TABLE tokens ADD COLUMN seq BIGINT;
ALTER TABLE tokens ALTER COLUMN seq SET DEFAULT nextval('tokens_seq');
ALTER SEQUENCE tokens_seq OWNED BY tokens.seq;
