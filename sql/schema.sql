-- smtpstore schema, tested on MariaDB 10.11 and written in the syntax
-- that MySQL 8 shares with it. The server applies it at every start, so
-- each statement is idempotent. Table and column names are a public
-- contract because people query them directly. All times are UTC.
--
-- Addresses are VARCHAR(320): a local part of 64 octets, "@" and a domain
-- of 255 octets. The case-insensitive collation makes `address = ?`,
-- VRFY and EXPN ignore case.

CREATE TABLE IF NOT EXISTS users (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  address VARCHAR(320) NOT NULL,
  name VARCHAR(255) NOT NULL DEFAULT '',
  PRIMARY KEY (id),
  UNIQUE KEY users_address (address),
  KEY users_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- sender is '' for the null reverse-path, never NULL. date is NULL when
-- the Date header is missing, unparseable or outside the years 1000 to
-- 9999 that DATETIME holds. size is the length of raw in bytes.
CREATE TABLE IF NOT EXISTS messages (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  sender VARCHAR(320) NOT NULL DEFAULT '',
  subject LONGTEXT NOT NULL,
  date DATETIME(3) NULL,
  body LONGTEXT NOT NULL,
  raw LONGBLOB NOT NULL,
  size INT UNSIGNED NOT NULL,
  received_at DATETIME(3) NOT NULL,
  client_address VARCHAR(255) NOT NULL DEFAULT '',
  helo VARCHAR(255) NOT NULL DEFAULT '',
  PRIMARY KEY (id),
  KEY messages_received_at (received_at),
  KEY messages_sender (sender)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS message_recipients (
  message_id BIGINT UNSIGNED NOT NULL,
  address VARCHAR(320) NOT NULL,
  PRIMARY KEY (message_id, address),
  KEY message_recipients_address (address),
  CONSTRAINT message_recipients_message FOREIGN KEY (message_id)
    REFERENCES messages (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Named mail_groups because GROUPS is a reserved word in MySQL 8.
CREATE TABLE IF NOT EXISTS mail_groups (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  name VARCHAR(255) NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY mail_groups_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS group_members (
  group_id BIGINT UNSIGNED NOT NULL,
  address VARCHAR(320) NOT NULL,
  PRIMARY KEY (group_id, address),
  CONSTRAINT group_members_group FOREIGN KEY (group_id)
    REFERENCES mail_groups (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
