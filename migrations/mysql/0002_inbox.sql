-- Delivery that survives crashes: every chat message is stored once in
-- `messages` before anyone is told of it; each receiver gets a row in its
-- `inbox` numbered by `seq` (1, 2, 3 ... per user, no gaps), and `inboxes`
-- holds each user's counters (its row is locked while a seq is assigned,
-- which keeps seq gap-free across the servers of a cluster). Rows leave
-- `inbox` when the receiver confirms them (DELIVERED, or written to a v1
-- client); `messages` stays for HISTORY until the retention period ends.

CREATE TABLE IF NOT EXISTS messages (
    mid          BIGINT      NOT NULL,
    sender_id    BIGINT      NOT NULL,
    -- 'u:LOW:HIGH' for the two users of a 1:1 chat, 'g:GROUP' for a group.
    conversation VARCHAR(48) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    -- The v2 JSON text of the push (with mid and ts, without seq).
    body         MEDIUMTEXT  CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
    PRIMARY KEY (mid),
    KEY messages_conversation (conversation, mid)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

-- Client message ids of the messages sent with one: a table of their own,
-- so that messages without one write no index entry for it.
CREATE TABLE IF NOT EXISTS message_cids (
    sender_id BIGINT      NOT NULL,
    cid       VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
    mid       BIGINT      NOT NULL,
    PRIMARY KEY (sender_id, cid),
    KEY message_cids_mid (mid)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

CREATE TABLE IF NOT EXISTS inbox (
    user_id BIGINT NOT NULL,
    seq     BIGINT NOT NULL,
    mid     BIGINT NOT NULL,
    size    BIGINT NOT NULL,
    PRIMARY KEY (user_id, seq),
    KEY inbox_mid (mid)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS inboxes (
    user_id       BIGINT NOT NULL,
    last_seq      BIGINT NOT NULL,
    delivered_seq BIGINT NOT NULL,
    pending_count BIGINT NOT NULL,
    pending_bytes BIGINT NOT NULL,
    PRIMARY KEY (user_id)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS tokens (
    -- SHA-256 of the token, hex: the token itself is never stored.
    hash       CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    user_id    BIGINT   NOT NULL,
    expires_at BIGINT   NOT NULL,
    PRIMARY KEY (hash),
    KEY tokens_expiry (expires_at)
) ENGINE = InnoDB;

-- Offline messages stored by earlier versions move into the inbox, in the
-- order they would have been delivered.
INSERT IGNORE INTO messages (mid, sender_id, conversation, body)
SELECT mid,
       COALESCE(JSON_VALUE(payload, '$.id'), 0),
       CASE WHEN JSON_VALUE(payload, '$.msgid') = 10
            THEN CONCAT('g:', JSON_VALUE(payload, '$.groupid'))
            ELSE CONCAT('u:', LEAST(CAST(JSON_VALUE(payload, '$.id') AS SIGNED), CAST(JSON_VALUE(payload, '$.toid') AS SIGNED)),
                        ':', GREATEST(CAST(JSON_VALUE(payload, '$.id') AS SIGNED), CAST(JSON_VALUE(payload, '$.toid') AS SIGNED)))
       END,
       payload
FROM offline_messages;

INSERT INTO inbox (user_id, seq, mid, size)
SELECT user_id, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY mid, id), mid, OCTET_LENGTH(payload)
FROM offline_messages;

INSERT INTO inboxes (user_id, last_seq, delivered_seq, pending_count, pending_bytes)
SELECT u.id,
       COALESCE((SELECT COUNT(*) FROM inbox i WHERE i.user_id = u.id), 0),
       0,
       COALESCE((SELECT COUNT(*) FROM inbox i WHERE i.user_id = u.id), 0),
       COALESCE((SELECT SUM(size) FROM inbox i WHERE i.user_id = u.id), 0)
FROM users u;

DROP TABLE offline_messages;
