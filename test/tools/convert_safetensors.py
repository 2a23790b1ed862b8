#!/usr/bin/env python3
"""convert_safetensors.py IN OUT DTYPE: rewrites the F32 safetensors file IN with every
tensor in DTYPE (F16: rounded to nearest by struct's 'e'; BF16: the upper 16 bits, cut;
F64: exact), in IN's order, header padded to 8 bytes (Python's standard library only).

convert_safetensors.py --check CONVERTED F32FILE: every tensor of F32FILE (heiretsu's
export of CONVERTED's import) equals CONVERTED's value widened to float32, bit for bit.
Prints "N tensors, M values equal" or exits 1 naming the first difference."""
import json
import struct
import sys


def read(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    return header, blob[8 + n:]


def values(info, data):
    begin, end = info["data_offsets"]
    raw = data[begin:end]
    dtype = info["dtype"]
    if dtype == "F32":
        return list(struct.unpack("<%df" % (len(raw) // 4), raw))
    if dtype == "F64":
        return [struct.unpack("<f", struct.pack("<f", v))[0]
                for v in struct.unpack("<%dd" % (len(raw) // 8), raw)]
    if dtype == "F16":
        return list(struct.unpack("<%de" % (len(raw) // 2), raw))
    if dtype == "BF16":
        return [struct.unpack("<f", struct.pack("<I", b << 16))[0]
                for b in struct.unpack("<%dH" % (len(raw) // 2), raw)]
    sys.exit("unsupported dtype " + dtype)


def convert(src, dst, dtype):
    header, data = read(src)
    out_header, chunks, at = {}, [], 0
    for name, info in header.items():
        if name == "__metadata__":
            out_header[name] = info
            continue
        v = values(info, data)
        if dtype == "F16":
            raw = struct.pack("<%de" % len(v), *v)
        elif dtype == "BF16":
            raw = b"".join(struct.pack("<H", struct.unpack("<I", struct.pack("<f", x))[0] >> 16) for x in v)
        else:
            raw = struct.pack("<%dd" % len(v), *v)
        out_header[name] = {"dtype": dtype, "shape": info["shape"], "data_offsets": [at, at + len(raw)]}
        chunks.append(raw)
        at += len(raw)
    text = json.dumps(out_header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))


def check(converted, exported):
    ch, cd = read(converted)
    eh, ed = read(exported)
    count = total = 0
    for name, info in ch.items():
        if name == "__metadata__":
            continue
        a, b = values(info, cd), values(eh[name], ed)
        for i, (x, y) in enumerate(zip(a, b)):
            if struct.pack("<f", x) != struct.pack("<f", y):
                sys.exit("%s[%d]: %r in %s, %r in %s" % (name, i, x, converted, y, exported))
        count += 1
        total += len(a)
    print("%d tensors, %d values equal" % (count, total))


if sys.argv[1] == "--check":
    check(sys.argv[2], sys.argv[3])
else:
    convert(sys.argv[1], sys.argv[2], sys.argv[3])
