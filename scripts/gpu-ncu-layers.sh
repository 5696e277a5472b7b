#!/usr/bin/env bash
# One device call (issue 6): registers and local-memory (spill) traffic of the batch-1 decode
# step's persistent launches under ncu, for each `;`-separated env setting in NCU_ENVS (default:
# the layers' launch without and with the first layer inside it, and one launch a layer).
# Builds nothing: carry dist/.
source scripts/gpu-setup.sh
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
METRICS=launch__registers_per_thread,smsp__sass_inst_executed_op_local_ld.sum,smsp__sass_inst_executed_op_local_st.sum,gpu__time_duration.sum
IFS=';' read -ra envs <<< "${NCU_ENVS:-BRAID_DECODE_LAYERS_PRE=0;BRAID_DECODE_LAYERS_PRE=1;BRAID_DECODE_LAYERS=0}"
i=0
for e in "${envs[@]}"; do
  i=$((i+1))
  env $e timeout 240 $NCU --cache-control none -k regex:decode_mlp --metrics $METRICS --csv \
    $BIN bench latency --model $M --device cuda --dtype bf16 --plan fused --runs 1 --new-tokens 3 --ways steps \
    > $OUT/ncu-$i.csv 2> $OUT/ncu-$i.err
  echo "== $e (exit $?)" | tee -a $OUT/summary.txt
  python3 - "$OUT/ncu-$i.csv" <<'PY' | tee -a $OUT/summary.txt
import csv, io, sys
t = open(sys.argv[1]).read()
rows = list(csv.reader(io.StringIO(t[t.index('"ID"'):])))
h = rows[0]
k, m, v = h.index("Kernel Name"), h.index("Metric Name"), h.index("Metric Value")
seen = {}
for r in rows[1:]:
    if len(r) > v:
        seen.setdefault(r[k], {})[r[m]] = r[v]
for name, ms in seen.items():
    print(name[:48], " ".join(f"{a.split('__')[-1]}={b}" for a, b in sorted(ms.items())))
PY
done
echo; echo "== summary"; cat $OUT/summary.txt
