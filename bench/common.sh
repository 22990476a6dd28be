# bench/common.sh - sourced by every bench/run_<part>.sh after it sets PART:
# passive OpenMP waits (as the soma CLI; spinning threads on shared cores cost
# 20-40x), whether PyTorch is there, and the helpers that read result lines.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
# OpenBLAS's kernel set: the one soma runs (soma_exec_tuned picks the widest the CPU
# runs where OpenBLAS does not know the CPU, instead of its SSE3 fallback), exported
# so that PyTorch's OpenBLAS multiplies with the same kernels
soma_core=$("${BUILD:-build/rel}/soma" version 2>/dev/null | sed -n 's/^openblas //p')
if [ -z "$OPENBLAS_CORETYPE" ] && [ -n "$soma_core" ] && [ "$soma_core" != unknown ]; then
    export OPENBLAS_CORETYPE=$soma_core
fi
have_torch=0
/usr/bin/python3 -c "import torch" 2>/dev/null && have_torch=1
[ $have_torch = 1 ] && echo "$PART: OpenBLAS kernels: soma ${soma_core:--}, PyTorch $(/usr/bin/python3 -c "import torch, ctypes; f = ctypes.CDLL('libopenblas.so.0').openblas_get_corename; f.restype = ctypes.c_char_p; print(f().decode())" 2>/dev/null)"
[ $have_torch = 0 ] && echo "$PART: python3-torch not installed; the PyTorch comparison (and its check) skipped (sh scripts/deps.sh bench)"
# value of key=VALUE in a result line; "-" for none
field() { v=$(echo "$1" | sed -nE "s/.* $2=([^ ]+).*/\1/p"); echo "${v:--}"; }
# a / b to 2 decimals, "-" unless both are numbers
div() { case "$1$2" in *-*|'') echo - ;; *) awk "BEGIN{printf \"%.2f\", $1/$2}" ;; esac; }
