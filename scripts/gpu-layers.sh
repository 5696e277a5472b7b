#!/usr/bin/env bash
# One device call (issue 6): the batch-1 decode step's one launch over its layers
# (`ops::decode_layers`, `braid_kernels::decode_mlp::decode_layers`): its checks (bits against
# one launch a layer) in bf16 and f16 (and f32's fallback), greedy text with it on and off,
# then batch-1 latency on and off, each run in its own process, alternating. Builds nothing:
# carry dist/.
#   LAYERS_RUNS  `;`-separated env settings, one latency run each (default below)
#   LAYERS_CHECKS  check groups (default decode_layers decode_mlp_qkv); LAYERS_DTYPES (default
#   bf16 f16 f32); LAYERS_CHECK_ENV  env settings for the checks; LAYERS_GENERATE=0 skips the text;
#   GEN_VAR  the switch the text is compared across (default BRAID_DECODE_LAYERS, 1 and 0);
#   SMI=1  samples the SM clock and power during each latency run; LAT_WAYS  the runs' --ways
#   NCU_PROMPTS  prompt lengths at which ncu times the layers' launch alone (L2 kept, clocks
#   free; eager device-state steps), to set against the graph's step at the cache length it runs
#   NCU_REGS  `;`-separated env settings: for each, ncu reads the layers' launch's registers a
#   unit and its local (spilled) loads and stores
# Results: $OUT/results.tar.gz, a summary printed last.
source scripts/gpu-setup.sh
DEFAULT='BRAID_DECODE_LAYERS=1;BRAID_DECODE_LAYERS=0;BRAID_DECODE_LAYERS=1;BRAID_DECODE_LAYERS=0'
only=""
for g in ${LAYERS_CHECKS:-decode_layers decode_mlp_qkv}; do only="$only --only $g"; done
for dt in ${LAYERS_DTYPES-bf16 f16 f32}; do
  env ${LAYERS_CHECK_ENV:-BRAID_CHECK=1} timeout 200 $BIN check-kernels --device cuda --dtype $dt $only > $OUT/check-$dt.txt 2>&1
  echo "exit $?" >> $OUT/check-$dt.txt
  echo "check $dt: $(grep -cE ' ok$' $OUT/check-$dt.txt) ok" | tee -a $OUT/summary.txt
  grep -vE ' ok$' $OUT/check-$dt.txt | tail -n +2 | head -20 | tee -a $OUT/summary.txt
done
for on in $([ "${LAYERS_GENERATE:-1}" = 1 ] && echo 1 0); do
  env ${GEN_VAR:-BRAID_DECODE_LAYERS}=$on timeout 150 $BIN generate --model $M --device cuda --plan fused --temperature 0 --ignore-eos --max-tokens 200 \
    --prompt "It was a truth universally acknowledged" > $OUT/generate-$on.txt 2> $OUT/generate-$on.err
  echo "generate (${GEN_VAR:-BRAID_DECODE_LAYERS}=$on): exit $? $(wc -c < $OUT/generate-$on.txt) bytes" | tee -a $OUT/summary.txt
done
[ "${LAYERS_GENERATE:-1}" = 1 ] && if cmp -s $OUT/generate-1.txt $OUT/generate-0.txt; then echo "generate: identical text on and off" | tee -a $OUT/summary.txt; else echo "generate: TEXT DIFFERS" | tee -a $OUT/summary.txt; fi
IFS=';' read -ra runs <<< "${LAYERS_RUNS:-$DEFAULT}"
i=0
for e in "${runs[@]}"; do
  i=$((i+1))
  # SMI=1: the SM clock, power and throttle reasons sampled every 200 ms during the run.
  [ "${SMI:-0}" = 1 ] && { nvidia-smi --query-gpu=clocks.sm,clocks.mem,power.draw,temperature.gpu,clocks_throttle_reasons.active --format=csv,noheader,nounits -lms 200 > $OUT/smi-$i.txt 2>&1 & smi=$!; }
  env $e timeout 150 $BIN bench latency --model $M --device cuda --dtype bf16 --plan fused --runs 3 ${LAT_WAYS:+--ways $LAT_WAYS} --json $OUT/latency-$i.json \
    > $OUT/latency-$i.txt 2>&1
  [ "${SMI:-0}" = 1 ] && { kill $smi; echo "  smi $i: $(sort -t, -k3 -n -r $OUT/smi-$i.txt | head -40 | awk -F, '{c+=$1; p+=$3; n++; t=$5} END {printf "top-40-power samples: sm %.0f MHz, %.0f W, throttle %s", c/n, p/n, t}')" | tee -a $OUT/summary.txt; }
  echo "run $i ($e): $(grep -E 'graph replay|streamed|identical|rror|panic' $OUT/latency-$i.txt | head -4 | tr '\n' ' ')" | tee -a $OUT/summary.txt
done
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
for p in ${NCU_PROMPTS:-}; do
  timeout 120 $NCU --clock-control none --cache-control none --csv --page raw --print-units base -k regex:decode_mlp_kernel \
    --metrics gpu__time_duration.sum,dram__bytes_read.sum,launch__grid_size \
    $BIN bench latency --model $M --device cuda --dtype bf16 --plan fused --prompt-len $p --ways steps --runs 1 --new-tokens 4 \
    > $OUT/ncu-layers-$p.csv 2> $OUT/ncu-layers-$p.err
  echo "ncu prompt $p (exit $?): decode_mlp_kernel launches over 100 us: $(python3 -c '
import csv, sys
ts = []
for r in csv.DictReader([l for l in open(sys.argv[1]) if l.startswith(chr(34))]):
    try: ts.append(float(r["gpu__time_duration.sum"].replace(",", "")) / 1e3)
    except ValueError: pass
print(" ".join("%.1f" % t for t in ts if t > 100))
' $OUT/ncu-layers-$p.csv)" | tee -a $OUT/summary.txt
done
IFS=';' read -ra regs <<< "${NCU_REGS:-}"
for e in "${regs[@]}"; do
  env $e timeout 120 $NCU --csv --page raw --print-units base -k regex:decode_mlp_kernel -c 3 \
    --metrics launch__registers_per_thread,smsp__sass_inst_executed_op_local_ld.sum,smsp__sass_inst_executed_op_local_st.sum,gpu__time_duration.sum \
    $BIN bench latency --model $M --device cuda --dtype bf16 --plan fused --ways steps --runs 1 --new-tokens 2 > $OUT/ncu-regs.csv 2>/dev/null
  echo "ncu regs ($e): $(python3 -c '
import csv, sys
for r in csv.DictReader([l for l in open(sys.argv[1]) if l.startswith(chr(34))]):
    g = lambda k: r.get(k, "").replace(",", "")
    if g("launch__registers_per_thread").isdigit():
        print("regs %s local ld %s st %s, %s ns;" % (g("launch__registers_per_thread"), g("smsp__sass_inst_executed_op_local_ld.sum"), g("smsp__sass_inst_executed_op_local_st.sum"), g("gpu__time_duration.sum")), end=" ")
' $OUT/ncu-regs.csv)" | tee -a $OUT/summary.txt
done
echo; echo "== summary"; cat $OUT/summary.txt
