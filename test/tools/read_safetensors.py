#!/usr/bin/env python3
"""An independent reader of safetensors files and heiretsu checkpoints, written from the
formats' descriptions with Python's standard library only (struct, json), for the export
tests: it shares no code with heiretsu's C++ reader and writer.

  read_safetensors.py FILE
      checks FILE (8-byte little-endian header length N; N bytes of JSON, an object of
      "__metadata__" and tensors {"dtype", "shape", "data_offsets"}; the tensors tile
      the data section in offset order, each END - BEGIN = numel x dtype size; the file
      ends with the last) and prints the header length and padding, the metadata, then
      one line per tensor in header order: NAME DTYPE [SHAPE] BEGIN END and its first
      values, then a total line.
  read_safetensors.py FILE --get NAME I [J ...]
      prints element [I, J, ...] of tensor NAME (float32 as Python's repr of the double).
  read_safetensors.py --checkpoint DIR NAME I [J ...]
      the same for the value of parameter NAME in heiretsu checkpoint DIR (its
      manifest.txt: "tensor NAME value f32 [SHAPE] FILE OFFSET LENGTH").

Exits 1 with a message on any violation.
"""
import json
import struct
import sys

SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
         "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}


def fail(msg):
    print("read_safetensors: " + msg, file=sys.stderr)
    sys.exit(1)


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def load(path):
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        fail("%s: %d bytes, no header length" % (path, len(blob)))
    (n,) = struct.unpack("<Q", blob[:8])
    if n > len(blob) - 8:
        fail("%s: header length %d exceeds the file" % (path, n))
    text = blob[8:8 + n].decode("utf-8")
    header = json.loads(text)  # raises on bad JSON
    if not isinstance(header, dict):
        fail("header is not an object")
    data = blob[8 + n:]
    tensors = []
    for name, info in header.items():
        if name == "__metadata__":
            if not all(isinstance(v, str) for v in info.values()):
                fail("__metadata__ values must be strings")
            continue
        dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in SIZES:
            fail("%s: unknown dtype %s" % (name, dtype))
        if any((not isinstance(d, int)) or d < 0 for d in shape):
            fail("%s: bad shape %r" % (name, shape))
        if end - begin != numel(shape) * SIZES[dtype]:
            fail("%s: offsets [%d, %d) do not hold %r of %s" % (name, begin, end, shape, dtype))
        tensors.append((name, dtype, shape, begin, end))
    at = 0
    for name, _, _, begin, end in sorted(tensors, key=lambda t: t[3]):
        if begin != at:
            fail("%s starts at %d, expected %d" % (name, begin, at))
        at = end
    if at != len(data):
        fail("the tensors end at data byte %d, the data section has %d" % (at, len(data)))
    return n, text, header, data, tensors


def element(data, begin, dtype, shape, index):
    if len(index) != len(shape) or any(not 0 <= i < d for i, d in zip(index, shape)):
        fail("index %r outside shape %r" % (index, shape))
    flat = 0
    for i, d in zip(index, shape):
        flat = flat * d + i
    if dtype == "F32":
        return struct.unpack_from("<f", data, begin + 4 * flat)[0]
    if dtype == "F64":
        return struct.unpack_from("<d", data, begin + 8 * flat)[0]
    if dtype == "BF16":
        (b,) = struct.unpack_from("<H", data, begin + 2 * flat)
        return struct.unpack("<f", struct.pack("<I", b << 16))[0]
    if dtype == "F16":
        return struct.unpack_from("<e", data, begin + 2 * flat)[0]
    fail("dtype %s is not a float" % dtype)


def main(argv):
    if len(argv) >= 4 and argv[1] == "--checkpoint":
        ckpt, name, index = argv[2], argv[3], [int(i) for i in argv[4:]]
        with open(ckpt + "/manifest.txt") as f:
            for line in f:
                w = line.split()
                if len(w) == 8 and w[0] == "tensor" and w[1] == name and w[2] == "value":
                    shape = [int(d) for d in w[4].strip("[]").split(",") if d]
                    with open(ckpt + "/" + w[5], "rb") as t:
                        t.seek(int(w[6]))
                        data = t.read(int(w[7]))
                    print(repr(element(data, 0, "F32", shape, index)))
                    return
        fail("%s: no value of %s" % (ckpt, name))
    if len(argv) < 2:
        fail(__doc__)
    n, text, header, data, tensors = load(argv[1])
    if len(argv) >= 4 and argv[2] == "--get":
        for name, dtype, shape, begin, _ in tensors:
            if name == argv[3]:
                print(repr(element(data, begin, dtype, shape, [int(i) for i in argv[4:]])))
                return
        fail("no tensor %s" % argv[3])
    print("header %d bytes (%d of JSON, %d of padding), data at %d" %
          (n, len(text.rstrip(" ")), n - len(text.rstrip(" ")), 8 + n))
    print("metadata %s" % json.dumps(header.get("__metadata__", {}), sort_keys=True))
    total = 0
    for name, dtype, shape, begin, end in tensors:
        count = min(3, numel(shape))
        first = []
        for k in range(count):
            idx, rest = [], k
            for d in reversed(shape):
                idx.insert(0, rest % d)
                rest //= d
            first.append("%.6g" % element(data, begin, dtype, shape, idx))
        print("%s %s %s %d %d %s" % (name, dtype, json.dumps(shape), begin, end, " ".join(first)))
        total += numel(shape)
    print("%d tensors, %d values, file %d bytes" % (len(tensors), total, 8 + n + len(data)))


if __name__ == "__main__":
    main(sys.argv)
