package pgqueue

import "github.com/agua-mail/agua/internal/pg"

// Migrations are the queue's schema steps (component "queue"), applied by
// agua db migrate or [postgres] migrate.
var Migrations = []pg.Migration{
	{Component: "queue", Version: 1, Name: "outbound queue: messages, bodies, recipients with claims", SQL: `
CREATE TABLE queue_message (
	id             text        PRIMARY KEY,
	sender         text        NOT NULL,
	smtputf8       boolean     NOT NULL DEFAULT false,
	eightbit       boolean     NOT NULL DEFAULT false,
	account        text        NOT NULL DEFAULT '',
	received       timestamptz NOT NULL,
	size           bigint      NOT NULL,
	held           boolean     NOT NULL DEFAULT false,
	delay_notified boolean     NOT NULL DEFAULT false
);
CREATE INDEX queue_message_received ON queue_message (received, id);

-- The bytes apart from the envelope: listing and claiming never read them,
-- and changing a message's flags never rewrites them.
CREATE TABLE queue_body (
	message text  PRIMARY KEY REFERENCES queue_message (id) ON DELETE CASCADE,
	data    bytea NOT NULL
);

-- One row per recipient (idx: its place in the envelope). status:
-- 0 pending, 1 deferred, 2 delivered, 3 bounced (queue.Status). next_at is
-- when it is due: the arrival for a pending one, so that Claim finds due
-- recipients by one range of queue_rcpt_due whatever their status. A claim is
-- claimed_by (a node's name) until claimed_until: a node that dies leaves
-- its claims to the others when the lease runs out.
CREATE TABLE queue_rcpt (
	message       text        NOT NULL REFERENCES queue_message (id) ON DELETE CASCADE,
	idx           integer     NOT NULL,
	addr          text        NOT NULL,
	status        smallint    NOT NULL DEFAULT 0,
	attempts      integer     NOT NULL DEFAULT 0,
	next_at       timestamptz NOT NULL,
	reply         text        NOT NULL DEFAULT '',
	updated       timestamptz,
	claimed_by    text,
	claimed_until timestamptz,
	PRIMARY KEY (message, idx)
);
CREATE INDEX queue_rcpt_due ON queue_rcpt (next_at) WHERE status < 2;
CREATE INDEX queue_rcpt_claimed ON queue_rcpt (claimed_by) WHERE claimed_by IS NOT NULL;
`},
}
