#!/usr/bin/env python3
"""compare_losses.py TOL REF.jsonl OTHER.jsonl...: every step's loss of each OTHER metrics
file (heiretsu run --metrics) against REF's, relative. Prints one line per file,
"PASS FILE: N steps (max rel diff X)" or "FAIL ...", and exits 1 on any failure or when
the files do not hold the same steps."""
import json
import os
import sys


def losses(path):
    with open(path) as f:
        return {o["step"]: o["loss"] for o in (json.loads(l) for l in f if l.strip())}


def main():
    tol, ref_path, others = float(sys.argv[1]), sys.argv[2], sys.argv[3:]
    ref = losses(ref_path)
    ok = bool(ref)
    for path in others:
        got = losses(path)
        if sorted(got) != sorted(ref):
            print("FAIL %s: steps %s, %s has %s" % (os.path.basename(path), sorted(got),
                                                   os.path.basename(ref_path), sorted(ref)))
            ok = False
            continue
        worst = max(abs(got[s] - ref[s]) / abs(ref[s]) for s in ref)
        verdict = "PASS" if worst <= tol else "FAIL"
        ok = ok and verdict == "PASS"
        print("%s %s: %d steps (max rel diff %.2g)" % (verdict, os.path.basename(path), len(ref), worst))
    sys.exit(0 if ok else 1)


main()
