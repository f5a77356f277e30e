#!/usr/bin/env python3
"""SMTP client for agua's interop tests, built on Python's smtplib.

Modes (each prints one result line and exits 0 when the expected outcome
happened, 1 otherwise):

  send     deliver one message; --tls starttls (STARTTLS), --ssl (implicit
           TLS), --user/--password log in (--mech to pick the mechanism)
  badpass  STARTTLS, then a login that must fail with SMTPAuthenticationError
  noauth   plain connection; AUTH must not be advertised and login() must
           raise SMTPNotSupportedError

TLS is verified against --cafile (agua's self-signed certificate, whose
subjectAltName includes 127.0.0.1).
"""

import argparse
import smtplib
import ssl
import sys


def tls_context(cafile):
    return ssl.create_default_context(cafile=cafile)


def connect(a):
    if a.ssl:
        return smtplib.SMTP_SSL(a.host, a.port, local_hostname=a.helo,
                                timeout=a.timeout, context=tls_context(a.cafile))
    s = smtplib.SMTP(a.host, a.port, local_hostname=a.helo, timeout=a.timeout)
    if a.tls:
        s.starttls(context=tls_context(a.cafile))
        s.ehlo(a.helo)
    return s


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["send", "badpass", "noauth"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--helo", default="test.local")
    p.add_argument("--timeout", type=float, default=15)
    p.add_argument("--tls", action="store_true", help="STARTTLS")
    p.add_argument("--ssl", action="store_true", help="implicit TLS")
    p.add_argument("--cafile")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--mech", choices=["PLAIN", "LOGIN"], help="one mechanism instead of login()'s choice")
    p.add_argument("--from", dest="sender")
    p.add_argument("--to")
    p.add_argument("--subject", default="interop")
    p.add_argument("--body", default="")
    a = p.parse_args()

    s = connect(a)
    try:
        if a.mode == "send":
            if a.user and a.mech:
                # smtplib sends LOGIN's user name as an initial response
                # (AUTH LOGIN <base64>), unlike swaks and curl.
                s.user, s.password = a.user, a.password
                s.auth(a.mech, getattr(s, "auth_" + a.mech.lower()))
            elif a.user:
                s.login(a.user, a.password)
            msg = ("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\n\r\n%s\r\n"
                   % (a.sender, a.to, a.subject, a.body))
            refused = s.sendmail(a.sender, [a.to], msg)
            if refused:
                print("REFUSED", refused)
                return 1
            print("SENT")
            return 0
        if a.mode == "badpass":
            try:
                s.login(a.user, a.password)
            except smtplib.SMTPAuthenticationError as e:
                print("SMTPAuthenticationError", e.smtp_code, e.smtp_error.decode())
                return 0
            print("UNEXPECTED: login succeeded")
            return 1
        if a.mode == "noauth":
            s.ehlo(a.helo)
            print("AUTH advertised:", s.has_extn("auth"))
            try:
                s.login(a.user, a.password)
            except smtplib.SMTPNotSupportedError as e:
                print("SMTPNotSupportedError", e)
                return 0
            except smtplib.SMTPException as e:
                print("UNEXPECTED:", type(e).__name__, e)
                return 1
            print("UNEXPECTED: login succeeded without TLS")
            return 1
    finally:
        try:
            s.quit()
        except smtplib.SMTPException:
            pass
    return 1


if __name__ == "__main__":
    sys.exit(main())
