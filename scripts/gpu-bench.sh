#!/usr/bin/env bash
# One device call (issue 6): Braid's benchmarks against HF transformers / PyTorch on the same
# card, weights and prompts, and a ratio table. Builds nothing: carry dist/ (CUDA braid-cli).
#   check       check-kernels (bf16): every fused op against its twin and f64
#   kernels     `bench kernels` (each op vs twin vs floor; Burn's matmul tuned vs untuned) and
#               PyTorch's cuBLAS matmuls / HF's RMSNorm+QKV at the same shapes
#   latency     batch-1 decode: HF eager generate vs `bench latency` (prompt 128, 256 new)
#   throughput  nano-vllm's workload: `bench throughput` vs HF static batches (first HF_SEQS;
#               HF=0 skips them)
#   profile     the same workload under BRAID_PROFILE=layers (per-layer phase totals; slower)
#   variants    the workload once more per `;`-separated flag set in VARIANTS (default: the
#               fused plan with f32-mode attention, `--plan fused-attn-f32`)
# PARTS picks them (default: all but profile); results in $OUT/results.tar.gz, the table in
# ratios.txt.
source scripts/gpu-setup.sh
PARTS=${PARTS:-check kernels latency throughput}
has() { [[ " $PARTS " == *" $1 "* ]]; }
if has check; then
  $BIN check-kernels --device cuda --dtype bf16 > $OUT/check-kernels.txt 2>&1; echo "check-kernels exit $?" >> $OUT/check-kernels.txt
  echo "check-kernels: $(grep -cE ' ok$' $OUT/check-kernels.txt) ok"; grep -E "FAIL|exit" $OUT/check-kernels.txt
fi
if has kernels; then
  ROWS=${ROWS:-1,64,128,256,4096}
  # PyTorch first (TORCH=0 skips it): its cuBLAS rate is the compute floor of Braid's table.
  if [ "${TORCH:-1}" != 0 ]; then
    timeout 120 python3 scripts/torch_kernels.py --rows $ROWS --iters 20 --json $OUT/torch-kernels.json 2>&1 | tee $OUT/torch-kernels.txt
    TF=$(python3 -c "import json; print(json.load(open('$OUT/torch-kernels.json'))['matmul_tflops'])" 2>/dev/null)
  fi
  # KERNEL_ARGS: more flags for bench kernels (e.g. --no-matmul).
  timeout 400 $BIN bench kernels --device cuda --dtype bf16 --rows $ROWS --iters 20 ${TF:+--matmul-tflops $TF} ${KERNEL_ARGS:-} --json $OUT/kernels.json 2>&1 | tee $OUT/kernels.txt
fi
if has latency; then
  # HF=0 skips HF's run; TAG names this run's files (several runs in one call).
  [ "${HF:-1}" != 0 ] && python3 scripts/hf_bench.py $M --prompt-len 128 --new-tokens 256 --runs 3 2>&1 | grep -v Loading | tee $OUT/hf-latency.json
  timeout 240 $BIN bench latency --model $M --device cuda --dtype bf16 --plan ${LAT_PLAN:-fused} --runs 3 --json $OUT/latency${TAG:-}.json 2>&1 | tail -8 | tee $OUT/latency${TAG:-}.txt
fi
if has throughput; then
  timeout 300 $BIN bench throughput --model $M --device cuda --dtype bf16 --plan fused ${TP_ARGS:-} \
    --save-workload $OUT/workload.json --json $OUT/throughput.json 2>&1 | grep -v "^\s*$" | tail -30 | tee $OUT/throughput.txt
  [ "${HF:-1}" != 0 ] && timeout ${HF_TIMEOUT:-200} python3 scripts/hf_throughput.py $M $OUT/workload.json --seqs ${HF_SEQS:-32} --batch 32 2>&1 | grep -v Loading | tail -2 | tee $OUT/hf-throughput.json
  rm -f $OUT/workload.json
fi
if has variants; then
  # The fused plan with attention in f32 mode (one pass; the other ops as `fused`).
  IFS=';' read -ra vs <<< "${VARIANTS:---plan fused-attn-f32}"
  i=0
  for v in "${vs[@]}"; do
    i=$((i+1))
    echo "== variant $i: $v" | tee $OUT/variant-$i.txt
    plan="--plan fused"; [[ "$v" == *--plan* ]] && plan=""
    timeout 240 $BIN bench throughput --model $M --device cuda --dtype bf16 $plan $v --json $OUT/variant-$i.json 2>&1 \
      | grep -v "^\s*$" | tail -4 | tee -a $OUT/variant-$i.txt
  done
fi
if has profile; then
  BRAID_PROFILE=layers timeout 300 $BIN bench throughput --model $M --device cuda --dtype bf16 --plan fused ${TP_ARGS:-} \
    > $OUT/profile.txt 2>&1; echo "profile exit $?" >> $OUT/profile.txt
  grep "^profile" $OUT/profile.txt | sort -k3 -g -r | head -30
fi
python3 - <<'PY' | tee $OUT/ratios.txt
import json, os
R = "/tmp/results"
def load(name):
    try:
        with open(os.path.join(R, name)) as f:
            return json.loads(f.read().strip().splitlines()[-1]) if name.startswith("hf-") else json.load(f)
    except Exception:
        return None
k, t = load("kernels.json"), load("torch-kernels.json")
if k and t:
    print("matmuls, device us (graphs): Braid = Burn's autotuned matmul; torch = cuBLAS")
    tm = {(m["name"], m["rows"]): m["torch_us"] for m in t["matmuls"]}
    print("%-8s %6s %10s %10s %10s %9s" % ("shape", "rows", "braid", "untuned", "torch", "torch/braid"))
    for m in k["matmuls"]:
        tt = tm.get((m["name"], m["rows"]))
        if tt:
            print("%-8s %6d %10.1f %10s %10.1f %8.2fx" % (m["name"], m["rows"], m["tuned_us"], "%.1f" % m["untuned_us"] if m["untuned_us"] else "-", tt, tt / m["tuned_us"]))
    hq = {r["rows"]: r["torch_us"] for r in t["rms_norm_qkv"]}
    print("rms_norm_qkv (Braid's fused op vs HF's RMSNorm + q/k/v linears):")
    for o in k["ops"]:
        if o["op"] == "rms_norm_qkv" and o["rows"] in hq:
            print("  rows %5d: braid %8.1f us, HF %8.1f us, HF/braid %.2fx" % (o["rows"], o["graph_us"], hq[o["rows"]], hq[o["rows"]] / o["graph_us"]))
    print("8192^3 matmul: Burn %.0f TFLOP/s, torch %.0f TFLOP/s; bandwidth %.0f GB/s" % (k["burn_matmul_tflops"], t["matmul_tflops"], k["bandwidth_gb_s"]))
hl, bl = load("hf-latency.json"), load("latency.json")
if hl and bl:
    for w in bl["ways"]:
        print("latency %-22s %8.1f tok/s  %5.1fx HF eager (%.1f)  %4.1f%% of floor" % (w["name"], w["tok_per_s"], w["tok_per_s"] / hl["hf_decode_tok_per_s"], hl["hf_decode_tok_per_s"], 100 * w["of_floor"]))
ht, bt = load("hf-throughput.json"), load("throughput.json")
if bt:
    line = "throughput braid %.1f output tok/s" % bt["output_tok_per_s"]
    if ht:
        line += ", HF %.1f (%d seqs, batch %d): %.1fx" % (ht["hf_output_tok_per_s"], ht["hf_seqs"], ht["hf_batch"], bt["output_tok_per_s"] / ht["hf_output_tok_per_s"])
    print(line)
PY
