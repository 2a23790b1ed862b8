#!/usr/bin/env python3
"""check_llmc.py FILE [--get TENSOR I J ...]: checks an llm.c GPT-2 model file against the
layout llm.c documents (train_gpt2.c: gpt2_build_from_checkpoint's header checks and
fill_in_parameter_sizes), with Python's standard library only.

Prints the header words, each of the 16 tensors with its size in floats, that the file
is exactly the header plus those tensors, and whether wte's padding rows (V..Vp) are
zero. --get prints element [I, J, ...] of a tensor, shaped as llm.c's comments shape it
(wte [Vp, C], qkvw [L, 3C, C], ...). Exits 1 on any violation."""
import os
import struct
import sys


def fail(msg):
    print("check_llmc: " + msg, file=sys.stderr)
    sys.exit(1)


def main(argv):
    path = argv[1]
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        header = struct.unpack("<256i", f.read(1024))
        if header[0] != 20240326:
            fail("bad magic %d" % header[0])
        if header[1] != 3:
            fail("version %d, expected 3 (fp32)" % header[1])
        maxT, V, L, NH, C, Vp = header[2:8]
        if any(header[8:]):
            fail("header words 8..255 are not zero")
        shapes = [("wte", [Vp, C]), ("wpe", [maxT, C]), ("ln1w", [L, C]), ("ln1b", [L, C]),
                  ("qkvw", [L, 3 * C, C]), ("qkvb", [L, 3 * C]), ("attprojw", [L, C, C]),
                  ("attprojb", [L, C]), ("ln2w", [L, C]), ("ln2b", [L, C]),
                  ("fcw", [L, 4 * C, C]), ("fcb", [L, 4 * C]), ("fcprojw", [L, C, 4 * C]),
                  ("fcprojb", [L, C]), ("lnfw", [C]), ("lnfb", [C])]
        print("magic %d version %d maxT %d V %d L %d NH %d C %d Vp %d" % header[:8])
        offsets, total = {}, 0
        for name, shape in shapes:
            n = 1
            for d in shape:
                n *= d
            offsets[name] = (1024 + 4 * total, shape)
            print("%s %s %d" % (name, shape, n))
            total += n
        if size != 1024 + 4 * total:
            fail("the file has %d bytes, the layout takes %d" % (size, 1024 + 4 * total))
        print("size %d = 1024 + 4 x %d parameters" % (size, total))
        f.seek(1024 + 4 * V * C)
        pad = f.read(4 * (Vp - V) * C)
        print("padding rows %d..%d: %s" % (V, Vp, "zero" if pad == bytes(len(pad)) else "NOT ZERO"))
        if len(argv) > 3 and argv[2] == "--get":
            at, shape = offsets[argv[3]]
            index = [int(i) for i in argv[4:]]
            flat = 0
            for i, d in zip(index, shape):
                if not 0 <= i < d:
                    fail("index %r outside %r" % (index, shape))
                flat = flat * d + i
            f.seek(at + 4 * flat)
            print(repr(struct.unpack("<f", f.read(4))[0]))


main(sys.argv)
