#!/usr/bin/env bash
# Prepares everything tests/guest/vm.py needs to boot Debian bookworm's stock 6.1 kernel
# under qemu with virtme-ng:
#   - Debian packages: qemu-system-x86, kmod, busybox-static, python3-venv, binutils;
#   - the current linux-image-<abi>-amd64 package (found through the linux-image-amd64
#     meta-package), downloaded and unpacked under CACHE_DIR/kernels/<kver>/, with
#     boot/vmlinux-<kver> decompressed from vmlinuz (qemu boots the ELF directly, ~5 s faster
#     than running the xz decompressor under emulation) and modules.dep generated;
#   - virtme-ng from PyPI in its own venv, CACHE_DIR/venv (the project .venv is left alone).
# On success it writes CACHE_DIR/guest.env (KEY=value lines read by vm.py) and prints it.
#
# Usage: tests/guest/fetch_kernel.sh [CACHE_DIR]   (as root; default $STACKPROF_GUEST_CACHE,
#        else /opt/stackprof-guest). Idempotent: a second run only checks.
# The guest must see the cache (the modules are read from it): virtme-ng mounts tmpfs over
# /var/cache, /var/tmp, /var/log and parts of /var/lib inside the guest, so the cache must not
# live there.
# Exits non-zero with a message when qemu, the kernel package or virtme-ng cannot be had.
set -euo pipefail

VIRTME_NG_VERSION=1.42
APT_PACKAGES=(qemu-system-x86 kmod busybox-static python3-venv binutils)

die() {
    echo "fetch_kernel: ERROR: $*" >&2
    exit 1
}
log() { echo "fetch_kernel: $*" >&2; }

CACHE_DIR=${1:-${STACKPROF_GUEST_CACHE:-/opt/stackprof-guest}}
CACHE_DIR=$(realpath -m "$CACHE_DIR")
case "$CACHE_DIR/" in
    /var/cache/* | /var/tmp/* | /var/log/* | /var/lib/* | /run/* | /dev/*)
        die "$CACHE_DIR is hidden inside the guest (virtme-ng mounts tmpfs there); use e.g. /opt/stackprof-guest" ;;
esac
mkdir -p "$CACHE_DIR" || die "cannot create cache folder $CACHE_DIR"
[ "$(id -u)" -eq 0 ] || die "must run as root (apt-get install, apt-get download)"

# --- Debian packages ---------------------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
updated=0
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq || die "apt-get update failed"
    updated=1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
fi
QEMU=$(command -v qemu-system-x86_64) || die "qemu-system-x86_64 not found after install"
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || die "$BUSYBOX (busybox-static) not found after install"
command -v depmod >/dev/null || die "depmod (kmod) not found after install"

# --- kernel package ----------------------------------------------------------------------
# Always ask the mirror which ABI linux-image-amd64 points at now: old ABIs leave the mirror.
# Offline with a complete cache, reuse the cache with a warning.
if [ "$updated" -eq 0 ] && ! apt-get update -qq; then
    if [ -f "$CACHE_DIR/guest.env" ]; then
        log "WARNING: apt-get update failed; reusing the cached kernel"
        cat "$CACHE_DIR/guest.env"
        exit 0
    fi
    die "apt-get update failed and nothing is cached in $CACHE_DIR"
fi
KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null \
    | awk '/Depends: linux-image-/{print $2; exit}')
[ -n "$KPKG" ] || die "cannot resolve linux-image-amd64 to a kernel package (apt-cache depends)"
KVER=${KPKG#linux-image-}
KROOT=$CACHE_DIR/kernels/$KVER
VMLINUX=$KROOT/boot/vmlinux-$KVER
MODDIR=$KROOT/lib/modules/$KVER

if [ ! -f "$KROOT/.complete" ]; then
    log "fetching $KPKG"
    rm -rf "$KROOT"
    mkdir -p "$CACHE_DIR/debs" "$KROOT"
    deb=$(find "$CACHE_DIR/debs" -maxdepth 1 -name "${KPKG}_*.deb" | head -n1)
    if [ -z "$deb" ]; then
        # apt-get download writes into the current folder; as root it warns that the download
        # is unsandboxed, which is harmless.
        (cd "$CACHE_DIR/debs" && apt-get download -q "$KPKG" 2>&1 | grep -v unsandboxed) || true
        deb=$(find "$CACHE_DIR/debs" -maxdepth 1 -name "${KPKG}_*.deb" | head -n1)
        [ -n "$deb" ] || die "apt-get download $KPKG failed"
    fi
    dpkg-deb -x "$deb" "$KROOT" || die "dpkg-deb -x $deb failed"
    [ -f "$KROOT/boot/vmlinuz-$KVER" ] || die "$deb holds no boot/vmlinuz-$KVER"
    [ -d "$MODDIR" ] || die "$deb holds no lib/modules/$KVER"

    # vmlinuz is a bzImage whose payload is one xz stream: find its magic and decompress it.
    python3 - "$KROOT/boot/vmlinuz-$KVER" "$VMLINUX.tmp" <<'EOF' || die "cannot decompress vmlinuz"
import lzma
import sys

data = open(sys.argv[1], "rb").read()
at = data.find(b"\xfd7zXZ\x00")
if at < 0:
    sys.exit("no xz stream in " + sys.argv[1])
out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[at:])
if out[:4] != b"\x7fELF":
    sys.exit("the xz stream in " + sys.argv[1] + " is not an ELF vmlinux")
open(sys.argv[2], "wb").write(out)
EOF
    mv "$VMLINUX.tmp" "$VMLINUX"
    # Debian's package ships no modules.dep (postinst makes it); make it once here.
    depmod -a -b "$KROOT" "$KVER" || die "depmod failed for $MODDIR"
    touch "$KROOT/.complete"
    # Drop other ABIs left over from earlier runs.
    find "$CACHE_DIR/kernels" -mindepth 1 -maxdepth 1 ! -name "$KVER" -exec rm -rf {} +
    find "$CACHE_DIR/debs" -maxdepth 1 -name 'linux-image-*.deb' ! -name "${KPKG}_*" -delete
fi

# --- virtme-ng ---------------------------------------------------------------------------
VENV=$CACHE_DIR/venv
VNG=$VENV/bin/vng
if ! "$VENV/bin/python" -c "import virtme_ng" 2>/dev/null \
    || [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("virtme-ng"))' \
        2>/dev/null)" != "$VIRTME_NG_VERSION" ]; then
    log "installing virtme-ng $VIRTME_NG_VERSION into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV" || die "python3 -m venv $VENV failed"
    "$VENV/bin/pip" install -q --disable-pip-version-check "virtme-ng==$VIRTME_NG_VERSION" \
        || die "pip install virtme-ng==$VIRTME_NG_VERSION failed"
fi
[ -x "$VNG" ] || die "$VNG missing after install"

cat >"$CACHE_DIR/guest.env.tmp" <<EOF
KVER=$KVER
VMLINUX=$VMLINUX
MODDIR=$MODDIR
VNG=$VNG
QEMU=$QEMU
BUSYBOX=$BUSYBOX
EOF
mv "$CACHE_DIR/guest.env.tmp" "$CACHE_DIR/guest.env"
log "ready ($(du -sh "$CACHE_DIR" | cut -f1) in $CACHE_DIR):"
cat "$CACHE_DIR/guest.env"
