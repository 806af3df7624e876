-- ChatChat schema for MySQL/MariaDB.
-- utf8mb4 everywhere; names use a binary NO PAD collation so that 'Bob',
-- 'bob' and 'bob ' are three different names, exactly as on SQLite.

CREATE TABLE IF NOT EXISTS users (
    id            BIGINT       NOT NULL AUTO_INCREMENT,
    name          VARCHAR(50)  CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
    password_hash VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    state         VARCHAR(8)   CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT 'offline',
    created_at    BIGINT       NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY users_name (name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

CREATE TABLE IF NOT EXISTS friends (
    user_id   BIGINT NOT NULL,
    friend_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, friend_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

CREATE TABLE IF NOT EXISTS chat_groups (
    id          BIGINT       NOT NULL AUTO_INCREMENT,
    name        VARCHAR(50)  CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
    description VARCHAR(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
    created_at  BIGINT       NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY chat_groups_name (name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

CREATE TABLE IF NOT EXISTS group_members (
    group_id BIGINT     NOT NULL,
    user_id  BIGINT     NOT NULL,
    role     VARCHAR(8) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    PRIMARY KEY (group_id, user_id),
    KEY group_members_user (user_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

-- Pushed messages waiting for their receiver. `payload` is the JSON text of
-- the pushed frame; `mid` orders them (oldest first) at delivery.
CREATE TABLE IF NOT EXISTS offline_messages (
    id       BIGINT     NOT NULL AUTO_INCREMENT,
    user_id  BIGINT     NOT NULL,
    mid      BIGINT     NOT NULL,
    payload  MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
    PRIMARY KEY (id),
    KEY offline_messages_user (user_id, mid)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;
