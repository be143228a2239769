#!/usr/bin/env bash
# The GPU check: every recipe on CUDA in fp32/fp16/bf16, checkpoint + resume, export, STS
# evaluation and bert-base-shaped step timings, in one command (benchmarks/gpu_check.py says what
# each check does; docs/gpu.md how to run it and read the report). From the repository root:
#
#   bash benchmarks/gpu_check.sh [--out DIR] [--budget SECONDS]   # on a CUDA machine
#   bash benchmarks/gpu_check.sh --cpu [--out DIR]                # dry run on the CPU (the test suite's)
#
# The interpreter is $PYTHON, else the checkout's .venv, else python3; it needs torch (CUDA build),
# transformers, sentence-transformers, faiss and datasets (`pip install -e .`). On a machine
# without internet access, wheels of faiss-cpu and datasets (and datasets' dill and multiprocess)
# may wait in .whl/ (ignored by git): when `import faiss, datasets` fails they are installed into
# /tmp/site (pip --no-index --no-deps --target), never into the environment. hardcse runs from the
# working tree (src/ on PYTHONPATH). The report goes to $OUT (or --out): gpu_check.json,
# gpu_check.md and this run's log, gpu_check.log.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2

out="${OUT:-benchmarks/out/gpu_check}"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --out) out="${args[$((i + 1))]:-$out}" ;;
    --out=*) out="${args[$i]#--out=}" ;;
  esac
done
mkdir -p "$out" || exit 2
log="$out/gpu_check.log"
: >"$log"

# The interpreter: $PYTHON, else this checkout's venv, else python3.
if [ -n "${PYTHON:-}" ]; then
  py="$PYTHON"
elif [ -x .venv/bin/python ]; then
  py=.venv/bin/python
else
  py=python3
fi

if ! "$py" -c 'import faiss, datasets' >/dev/null 2>&1; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    echo "gpu_check.sh: installing the wheels in .whl/: $(cd .whl && ls *.whl | tr '\n' ' ')" | tee -a "$log"
    if ! "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl >>"$log" 2>&1; then
      echo "gpu_check.sh: pip could not install .whl/*.whl (see $log)" | tee -a "$log"
    fi
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "gpu_check.sh: faiss or datasets is missing and .whl/ holds no wheels; the dependencies check will fail" \
      "(pip install -e . installs them; offline, put their wheels in .whl/: docs/gpu.md)" | tee -a "$log"
  fi
fi

export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
unset HARDCSE_DATA  # the check writes its own data; the real data is not needed

"$py" benchmarks/gpu_check.py --out "$out" "$@" 2>&1 | tee -a "$log"
exit "${PIPESTATUS[0]}"
