#!/usr/bin/env python3
"""Verify every DKIM-Signature of a message with dkimpy (Debian python3-dkim).

usage: verify.py KEYS.json MESSAGE...
KEYS.json maps a DNS name ("sel._domainkey.example.org.") to the list of
TXT character-strings the test publishes; they are joined as a resolver
joins them (RFC 6376 3.6.2.2). No real DNS is ever asked.
Prints one line per signature, topmost first, prefixed by the file's name:
  "<file> <i> pass d=<domain> s=<selector> a=<algorithm>", "<file> <i> fail <reason>",
  or "<file> none" for a message without a signature.
"""
import json
import os
import sys

import dkim

with open(sys.argv[1]) as f:
    keys = json.load(f)


def dnsfunc(name, timeout=5):
    n = name.decode() if isinstance(name, bytes) else name
    if not n.endswith("."):
        n += "."
    parts = keys.get(n)
    if parts is None:
        return None
    if any(len(p.encode()) > 255 for p in parts):
        raise SystemExit("TXT string longer than 255 bytes for " + n)
    return "".join(parts).encode()


for path in sys.argv[2:]:
    name = os.path.basename(path)
    with open(path, "rb") as f:
        msg = f.read()
    d = dkim.DKIM(msg)
    count = sum(1 for k, _ in d.headers if k.lower() == b"dkim-signature")
    if count == 0:
        print(name, "none")
    for i in range(count):
        try:
            ok = d.verify(idx=i, dnsfunc=dnsfunc)
        except dkim.DKIMException as e:
            print(name, i, "fail", type(e).__name__, e)
            continue
        sig = d.signature_fields
        if ok:
            print(name, i, "pass", "d=" + sig[b"d"].decode(), "s=" + sig[b"s"].decode(), "a=" + sig[b"a"].decode())
        else:
            print(name, i, "fail", "signature did not verify")
