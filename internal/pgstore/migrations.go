package pgstore

import "github.com/agua-mail/agua/internal/pg"

// Migrations are the mail store's schema steps (component "mailstore"),
// applied by agua db migrate or at start ([postgres] migrate).
//
// mail_users holds a user's quota usage (bytes in all folders, kept in the
// same transaction as every change of them) and whether the default
// folders were made; mail_folders a folder's UIDVALIDITY, UIDNEXT and
// modification sequence (INBOX is the name ""); mail_messages one row per
// message with its body in mail_blobs (bytea, which PostgreSQL compresses
// and moves out of line, TOAST, past about 2 kB). UIDVALIDITY comes from a
// sequence that starts at the migration's Unix time, so that a folder
// deleted and made again never gets the UIDVALIDITY it had (RFC 3501
// 2.3.1.1).
var Migrations = []pg.Migration{{
	Component: "mailstore", Version: 1, Name: "users, folders, messages, blobs",
	SQL: `
CREATE TABLE mail_users (
	usr           text    PRIMARY KEY,
	used          bigint  NOT NULL DEFAULT 0,
	defaults_made boolean NOT NULL DEFAULT false
);
CREATE SEQUENCE mail_uidvalidity MAXVALUE 4294967295;
SELECT setval('mail_uidvalidity', extract(epoch FROM now())::bigint);
CREATE TABLE mail_folders (
	id          bigserial PRIMARY KEY,
	usr         text      NOT NULL REFERENCES mail_users (usr),
	name        text      NOT NULL,
	uidvalidity bigint    NOT NULL DEFAULT nextval('mail_uidvalidity'),
	uidnext     bigint    NOT NULL DEFAULT 1,
	modseq      bigint    NOT NULL DEFAULT 1,
	UNIQUE (usr, name)
);
CREATE TABLE mail_blobs (
	id   bigserial PRIMARY KEY,
	data bytea     NOT NULL
);
CREATE TABLE mail_messages (
	folder        bigint      NOT NULL REFERENCES mail_folders (id),
	uid           bigint      NOT NULL,
	size          bigint      NOT NULL,
	flags         text        NOT NULL DEFAULT '',
	internal_date timestamptz NOT NULL,
	new           boolean     NOT NULL,
	blob          bigint      NOT NULL,
	PRIMARY KEY (folder, uid)
);
-- The flag letters of cur and add without those of del, sorted and
-- without repeats (mailstore's flag letters).
CREATE FUNCTION mail_flags(cur text, add text, del text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
	SELECT coalesce(string_agg(c, '' ORDER BY c COLLATE "C"), '')
	FROM (SELECT DISTINCT c FROM regexp_split_to_table(cur || add, '') AS c WHERE c <> '' AND strpos(del, c) = 0) AS s
$$;
`,
}}
