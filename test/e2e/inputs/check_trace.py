"""Checks a trace of `heiretsu run --trace` (runtime/exec/trace.h) and prints what it
holds, for FileCheck: usage: check_trace.py TRACE.json STEPS (e.g. 2:3).

Fails (exit 1, saying why) unless the file is valid JSON in the Trace Event Format,
every complete event has name, cat, pid, tid, ts and dur, each rank's process is
named, each traced step has one "step N" event per rank with its bubble in [0, 1],
the step's runs, instructions and waits lie inside it, and every instruction lies
inside a run."""
import json
import re
import sys

path, steps = sys.argv[1], sys.argv[2]
first, last = (int(s) for s in steps.split(":"))


def fail(why):
    print(f"check_trace: {path}: {why}", file=sys.stderr)
    sys.exit(1)


with open(path) as f:
    trace = json.load(f)
if trace.get("displayTimeUnit") != "ms":
    fail("no displayTimeUnit ms")
events = trace["traceEvents"]
names = {}
complete = []
for e in events:
    if e.get("ph") == "M":
        if e["name"] == "process_name":
            names[e["pid"]] = e["args"]["name"]
        continue
    if e.get("ph") != "X":
        fail(f"an event of phase {e.get('ph')}")
    for key in ("name", "cat", "pid", "tid", "ts", "dur"):
        if key not in e:
            fail(f"an event without {key}: {e}")
    if e["dur"] < 0:
        fail(f"a negative duration: {e}")
    complete.append(e)
pids = sorted({e["pid"] for e in complete})
if sorted(names) != pids:
    fail(f"processes named {sorted(names)}, events of {pids}")
for pid in pids:
    if not re.fullmatch(rf"rank {pid} \(stage \d+, dp \d+, tp \d+(, ep \d+)?\)", names[pid]):
        fail(f"process {pid} is named '{names[pid]}'")

cats = sorted({e["cat"] for e in complete})
runs = None
for pid in pids:
    mine = [e for e in complete if e["pid"] == pid]
    for step in range(first, last + 1):
        of_step = [e for e in mine if e["args"].get("step") == step]
        whole = [e for e in of_step if e["cat"] == "step"]
        if len(whole) != 1 or whole[0]["name"] != f"step {step}":
            fail(f"rank {pid}: {len(whole)} events of step {step}")
        s = whole[0]
        if not 0 <= s["args"]["bubble"] <= 1:
            fail(f"rank {pid}: step {step}'s bubble is {s['args']['bubble']}")
        units = [e for e in of_step if e["cat"] == "unit"]
        mine_runs = sorted(u["name"] for u in units if u["args"]["microbatch"] >= 0)
        if runs is None:
            runs = mine_runs
        if mine_runs != runs:
            fail(f"rank {pid}: step {step} runs {mine_runs}, another {runs}")
        for e in of_step:
            if e["ts"] < s["ts"] or e["ts"] + e["dur"] > s["ts"] + s["dur"] + 1e-3:
                fail(f"rank {pid}: {e['name']} lies outside its step")
            if e["tid"] != 2 or e["name"] in ("zero_grads", "wait_all_sends", "join_buckets",
                                              "loss_all_reduce"):
                continue
            if not any(u["ts"] <= e["ts"] and e["ts"] + e["dur"] <= u["ts"] + u["dur"] + 1e-3
                       for u in units):
                fail(f"rank {pid}: {e['name']} at {e['ts']} lies outside every run")
print(f"pids {' '.join(map(str, pids))}; steps {first}-{last}; categories {' '.join(cats)}")
order = sorted(runs, key=lambda n: (n[0] != "f", int(n.split()[1])))  # forwards first
print("runs per step and rank: " + " ".join(order))
print(f"{len(complete)} events: ok")
