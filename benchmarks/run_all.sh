#!/usr/bin/env bash
# Every CPU figure of BENCHMARKS.md, one script after the other (never in parallel: they would
# share the CPU). Logs go to benchmarks/results/<name>.log; the last line of each is its JSON.
#   bash benchmarks/run_all.sh            # full (about 15 min on 2 idle cores)
#   bash benchmarks/run_all.sh --quick    # smoke test
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p benchmarks/results
quick=${1:-}
run() {
  local name=$1; shift
  echo "== $name: python $* $quick  ($(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1-3 /proc/loadavg))"
  python "$@" $quick 2>&1 | tee "benchmarks/results/$name${quick:+-quick}.log"
}
run predict benchmarks/bench_predict.py
run memory benchmarks/bench_memory.py --repeats 2
run train benchmarks/bench_train.py --device cpu --arch resnet18 --steps 20 --warmup 2 --batch-size 2 --crop-size 256 --rounds 2
run export benchmarks/bench_export.py --images 30
run fastpath benchmarks/bench_fastpath.py --images 10 --rounds 2 --ap
run stream benchmarks/bench_stream.py --sizes 1000 8000
