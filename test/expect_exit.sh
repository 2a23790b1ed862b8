#!/usr/bin/env bash
# usage: expect_exit.sh STATUS CMD [ARGS...] -- runs CMD, passes its output through
# and exits 0 only when CMD exited with STATUS (lit's `not` accepts any failure).
want=$1
shift
"$@"
got=$?
if [ "$got" -ne "$want" ]; then
  echo "expect_exit: '$*' exited with $got, expected $want" >&2
  exit 1
fi
exit 0
