#!/bin/bash
# instructions per decode: cgh.sh TESTBIN
T=$1
a=$(N=10000 valgrind --tool=callgrind --callgrind-out-file=/tmp/cgh1.out $T --ignored --exact scan::harness::decode_loop 2>&1 | grep "refs" | awk '{print $NF}' | tr -d ,)
b=$(N=110000 valgrind --tool=callgrind --callgrind-out-file=/tmp/cgh2.out $T --ignored --exact scan::harness::decode_loop 2>&1 | grep "refs" | awk '{print $NF}' | tr -d ,)
echo "instr/decode: $(( (b - a) / 100000 ))"
