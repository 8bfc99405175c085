"""Turns labtool probe's JSON report into PASS/FAIL/INFO lines (lab.sh).

Usage: judge.py REPORT STRICT, STRICT "1" when a socket unit holds the
listeners across restarts, so that refused connections count as failures.
"""
import json
import sys


def main():
    rep = json.load(open(sys.argv[1]))
    strict = sys.argv[2] == "1"

    def out(ok, msg):
        print("PASS" if ok else "FAIL", msg)

    b = rep["balanced"]
    bad = b["attempts"] - b["outcomes"].get("ok", 0)
    out(bad == 0 and b["attempts"] > 0,
        f"health-checking client: {bad} failed of {b['attempts']} logins")
    out(rep["min_healthy_nodes"] >= 2,
        f"never fewer than 2 healthy nodes (fewest: {rep['min_healthy_nodes']})")
    for n, c in rep["pinned"].items():
        o = c["outcomes"]
        lf = o.get("login_failed", 0) + o.get("other", 0)
        out(lf == 0, f"pinned {n}: {lf} failed logins (NO/BAD/timeouts) of {c['attempts']}")
        ref, eof = o.get("refused", 0), o.get("eof", 0)
        msg = (f"pinned {n}: {ref} refused connections (longest run "
               f"{c.get('longest_refused') or 'none'}), {eof} dropped before the answer")
        if strict:
            out(ref == 0 and eof == 0, msg)
        else:
            print("INFO", msg + " (no socket unit yet: reported, not judged)")
    for n, c in rep["idle"].items():
        out(c["bye_unavailable"] > 0 and c["dropped_without_bye"] == 0 and c["not_reconnected"] == 0,
            f"IDLE on {n}: {c['bye_unavailable']} told BYE [UNAVAILABLE], "
            f"{c['dropped_without_bye']} dropped without, {c['reconnected']} reconnected "
            f"({c['reconnected_same']} to the same node), {c['not_reconnected']} not")


main()
