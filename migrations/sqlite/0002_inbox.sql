-- Delivery that survives crashes: every chat message is stored once in
-- `messages` before anyone is told of it; each receiver gets a row in its
-- `inbox` numbered by `seq` (1, 2, 3 ... per user, no gaps), and `inboxes`
-- holds each user's counters. Rows leave `inbox` when the receiver confirms
-- them (DELIVERED, or written to a v1 client); `messages` stays for HISTORY
-- until the retention period ends.

CREATE TABLE IF NOT EXISTS messages (
    mid          INTEGER PRIMARY KEY,
    sender_id    INTEGER NOT NULL,
    -- 'u:LOW:HIGH' for the two users of a 1:1 chat, 'g:GROUP' for a group.
    conversation TEXT    NOT NULL,
    -- The v2 JSON text of the push (with mid and ts, without seq).
    body         TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_conversation ON messages (conversation, mid);

-- Client message ids of the messages sent with one: a table of their own,
-- so that messages without one write no index entry for it.
CREATE TABLE IF NOT EXISTS message_cids (
    sender_id INTEGER NOT NULL,
    cid       TEXT    NOT NULL,
    mid       INTEGER NOT NULL,
    PRIMARY KEY (sender_id, cid)
);
CREATE INDEX IF NOT EXISTS message_cids_mid ON message_cids (mid);

CREATE TABLE IF NOT EXISTS inbox (
    user_id INTEGER NOT NULL,
    seq     INTEGER NOT NULL,
    mid     INTEGER NOT NULL,
    size    INTEGER NOT NULL,
    PRIMARY KEY (user_id, seq)
);
CREATE INDEX IF NOT EXISTS inbox_mid ON inbox (mid);

CREATE TABLE IF NOT EXISTS inboxes (
    user_id       INTEGER PRIMARY KEY,
    last_seq      INTEGER NOT NULL,
    delivered_seq INTEGER NOT NULL,
    pending_count INTEGER NOT NULL,
    pending_bytes INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS tokens (
    -- SHA-256 of the token, hex: the token itself is never stored.
    hash       TEXT    PRIMARY KEY,
    user_id    INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS tokens_expiry ON tokens (expires_at);

-- Offline messages stored by earlier versions move into the inbox, in the
-- order they would have been delivered.
INSERT OR IGNORE INTO messages (mid, sender_id, conversation, body)
SELECT mid,
       COALESCE(json_extract(payload, '$.id'), 0),
       CASE WHEN json_extract(payload, '$.msgid') = 10
            THEN 'g:' || json_extract(payload, '$.groupid')
            ELSE 'u:' || MIN(json_extract(payload, '$.id'), json_extract(payload, '$.toid'))
                 || ':' || MAX(json_extract(payload, '$.id'), json_extract(payload, '$.toid'))
       END,
       payload
FROM offline_messages;

INSERT INTO inbox (user_id, seq, mid, size)
SELECT user_id, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY mid, id), mid, LENGTH(CAST(payload AS BLOB))
FROM offline_messages;

INSERT INTO inboxes (user_id, last_seq, delivered_seq, pending_count, pending_bytes)
SELECT u.id,
       COALESCE((SELECT COUNT(*) FROM inbox i WHERE i.user_id = u.id), 0),
       0,
       COALESCE((SELECT COUNT(*) FROM inbox i WHERE i.user_id = u.id), 0),
       COALESCE((SELECT SUM(size) FROM inbox i WHERE i.user_id = u.id), 0)
FROM users u;

DROP TABLE offline_messages;
