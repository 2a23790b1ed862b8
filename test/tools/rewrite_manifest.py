#!/usr/bin/env python3
"""rewrite_manifest.py MANIFEST KEY VALUE: sets the line `KEY ...` of a checkpoint
manifest to `KEY VALUE` and recomputes its manifest_checksum (64-bit FNV-1a over
8-byte little-endian words, a last partial word zero-padded: checkpoint.h), as someone
forging a checkpoint would. Standard library only."""
import struct
import sys

path, key, value = sys.argv[1], sys.argv[2], sys.argv[3]
lines = open(path, encoding="utf-8").read().split("\n")[:-1]
body = [l for l in lines if not l.startswith("manifest_checksum ")]
body = [f"{key} {value}" if l.split(" ", 1)[0] == key else l for l in body]
text = ("\n".join(body) + "\n").encode("utf-8")
h = 0xcbf29ce484222325
padded = text + b"\0" * (-len(text) % 8)
for (word,) in struct.iter_unpack("<Q", padded):
    h = ((h ^ word) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
open(path, "w", encoding="utf-8").write(text.decode("utf-8") + f"manifest_checksum fnv1a64w {h:016x}\n")
