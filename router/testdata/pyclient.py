#!/usr/bin/env python3
"""A mail client that is not ours: Python's imaplib and poplib, logging in
through Switchboard and printing what the server said.

usage: pyclient.py MODE HOST PORT CAFILE USER PASSWORD
MODE is imaps, starttls, pop3s or stls. Prints "messages N" on success.
"""
import imaplib
import poplib
import ssl
import sys


def main():
    mode, host, port, cafile, user, password = sys.argv[1:7]
    port = int(port)
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = True
    if mode in ("imaps", "starttls"):
        if mode == "imaps":
            m = imaplib.IMAP4_SSL(host, port, ssl_context=ctx)
        else:
            m = imaplib.IMAP4(host, port)
            m.starttls(ssl_context=ctx)
        typ, _ = m.login(user, password)
        assert typ == "OK", typ
        typ, data = m.select("INBOX")
        assert typ == "OK", typ
        print("messages", int(data[0]))
        typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK", typ
        m.logout()
    else:
        if mode == "pop3s":
            p = poplib.POP3_SSL(host, port, context=ctx)
        else:
            p = poplib.POP3(host, port)
            p.stls(context=ctx)
        p.user(user)
        p.pass_(password)
        count, _ = p.stat()
        print("messages", count)
        p.retr(1)
        p.quit()


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # the test reads the message
        print("error", type(e).__name__, e)
        sys.exit(1)
