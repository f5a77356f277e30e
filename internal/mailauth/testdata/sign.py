# sign.py KEYFILE SELECTOR DOMAIN LENGTH < message > signed message
# Signs with dkimpy (Debian python3-dkim), relaxed/relaxed, the way an
# independent signer would; LENGTH=1 adds the body length tag l=.
import sys
import dkim

key = open(sys.argv[1], "rb").read()
msg = sys.stdin.buffer.read()
sig = dkim.sign(msg, sys.argv[2].encode(), sys.argv[3].encode(), key,
                include_headers=[b"from", b"to", b"subject", b"date"],
                canonicalize=(b"relaxed", b"relaxed"),
                length=sys.argv[4] == "1")
sys.stdout.buffer.write(sig + msg)
