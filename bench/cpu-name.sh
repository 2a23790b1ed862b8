#!/usr/bin/env bash
# The CPU a benchmark ran on, for its records: the model name (which alone does not
# tell the machine kinds apart: the 2-core VMs named "AMD EPYC" have been a Zen 3
# without AVX-512, family 25, and a Zen 5 with it, family 26), the family and model
# numbers, and whether it has AVX-512. Prints e.g.
#   AMD EPYC (family 26, model 2, AVX-512)
field() { grep -m1 "^$1[[:space:]]*:" /proc/cpuinfo | cut -d: -f2 | xargs; }
vector=$(grep -qw avx512f /proc/cpuinfo && echo "AVX-512" || echo "no AVX-512")
echo "$(field 'model name') (family $(field 'cpu family'), model $(field model), $vector)"
