#!/usr/bin/env python3
"""Reads a mailbox over IMAP with Python's imaplib (a real client) and
prints one JSON object: {folder: [{"id", "subject", "flags", "date"}]}
with every message's Message-ID, Subject, flags and INTERNALDATE (Unix
seconds).

usage: imap_dump.py HOST PORT USER PASSWORD"""
import datetime
import imaplib
import json
import re
import sys

host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
c = imaplib.IMAP4(host, port)
c.login(user, password)
typ, listing = c.list()
assert typ == "OK", listing
out = {}
for line in listing:
    m = re.match(rb'\((.*?)\) (?:"(.)"|NIL) (.*)$', line)
    attrs, name = m.group(1), m.group(3).decode()
    if name.startswith('"'):
        name = name[1:-1]
    if b"\\Noselect" in attrs or b"\\NoSelect" in attrs:
        continue
    typ, data = c.select('"%s"' % name, readonly=True)
    assert typ == "OK", (name, data)
    msgs = []
    if int(data[0]) > 0:
        typ, data = c.uid("FETCH", "1:*", "(FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID SUBJECT)])")
        assert typ == "OK", data
        for item in data:
            if not isinstance(item, tuple):
                continue
            head, literal = item[0].decode(), item[1].decode()
            flags = re.search(r"FLAGS \(([^)]*)\)", head).group(1).split()
            date = re.search(r'INTERNALDATE "([^"]+)"', head).group(1)
            when = datetime.datetime.strptime(date.strip(), "%d-%b-%Y %H:%M:%S %z")
            mid = re.search(r"(?im)^Message-ID: *<([^>]*)>", literal)
            subject = re.search(r"(?im)^Subject: *(.*?)\r?$", literal)
            msgs.append({"id": mid.group(1) if mid else "", "subject": subject.group(1) if subject else "",
                         "flags": sorted(flags), "date": int(when.timestamp())})
    out[name] = msgs
c.logout()
print(json.dumps(out))
