package pgaccounts

import "github.com/agua-mail/agua/internal/pg"

// Component is this package's name in agua_schema.
const Component = "accounts"

// notifyChannel is the LISTEN/NOTIFY channel every change to the accounts
// tables is announced on (by the trigger below, at COMMIT).
const notifyChannel = "agua_accounts"

// Migrations is the accounts schema, step by step (server.PostgresMigrations
// applies them with the other parts'). Never edit a step that has shipped:
// append one.
//
// Text columns use the "C" collation so that ORDER BY compares bytes, as
// the SQLite directory does. quota and created are 64 bits. A statement
// trigger on each table announces every change on notifyChannel; a change
// made with psql by hand is announced too.
var Migrations = []pg.Migration{{
	Component: Component, Version: 1, Name: "domains, users, aliases; change notification",
	SQL: `
CREATE TABLE accounts_domains (
	name    text COLLATE "C" PRIMARY KEY,
	created timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE accounts_users (
	address  text COLLATE "C" PRIMARY KEY,
	domain   text COLLATE "C" NOT NULL REFERENCES accounts_domains (name),
	password text NOT NULL,
	quota    bigint NOT NULL DEFAULT 0 CHECK (quota >= 0),
	created  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accounts_users_domain ON accounts_users (domain);
CREATE TABLE accounts_aliases (
	source  text COLLATE "C" NOT NULL,
	target  text COLLATE "C" NOT NULL,
	domain  text COLLATE "C" NOT NULL REFERENCES accounts_domains (name),
	created timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (source, target)
);
CREATE INDEX accounts_aliases_domain ON accounts_aliases (domain);
CREATE FUNCTION accounts_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('` + notifyChannel + `', TG_TABLE_NAME);
	RETURN NULL;
END $$;
CREATE TRIGGER accounts_domains_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON accounts_domains
	FOR EACH STATEMENT EXECUTE FUNCTION accounts_changed();
CREATE TRIGGER accounts_users_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON accounts_users
	FOR EACH STATEMENT EXECUTE FUNCTION accounts_changed();
CREATE TRIGGER accounts_aliases_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON accounts_aliases
	FOR EACH STATEMENT EXECUTE FUNCTION accounts_changed();
`,
}}
