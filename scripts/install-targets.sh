#!/usr/bin/env bash
# Emulated targets for numerics checks (edgepipe/targets/emulation.py): qemu-user, and under DEST/aarch64 an arm64
# Debian bookworm python3.11 (sysroot/) plus the aarch64 numpy + onnxruntime wheels at the host venv's versions
# (site/). The arm64 .debs come through a private apt state: the system's dpkg architectures stay as they are.
# Usage: bash scripts/install-targets.sh [DEST]   (DEST defaults to .targets at the repo root; VENV to .venv)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=${1:-$repo/.targets}
venv=${VENV:-.venv}
case $venv in /*) ;; *) venv=$repo/$venv ;; esac
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
# What `import numpy, onnxruntime` and an inference session need (python3.11's own NEEDED: libc, libz, libexpat;
# the wheels': libstdc++, libgcc_s); libffi8 for ctypes. onnxruntime's declared deps (flatbuffers, packaging,
# protobuf, sympy) are for its tools, not for running a model, so site/ has none of them.
debs="python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libstdc++6 libgcc-s1 zlib1g libexpat1 libffi8"

dist_version() {  # the venv's installed version of distribution $1
  local d
  for d in "$venv"/lib/python3*/site-packages/"$1"-[0-9]*.dist-info; do
    if [ -d "$d" ]; then d=${d##*/}; d=${d#"$1"-}; echo "${d%.dist-info}"; return 0; fi
  done
  echo "error: no $1 in $venv; fix: make install" >&2
  return 1
}
numpy_v=$(dist_version numpy)
ort_v=$(dist_version onnxruntime)
sysroot_key="bookworm arm64: $debs"
site_key="numpy==$numpy_v onnxruntime==$ort_v"
work=$dest/aarch64
if command -v qemu-aarch64 >/dev/null && command -v qemu-x86_64 >/dev/null \
  && [ "$(cat "$work/sysroot/.installed" 2>/dev/null)" = "$sysroot_key" ] \
  && [ "$(cat "$work/site/.installed" 2>/dev/null)" = "$site_key" ]; then
  exit 0
fi

if ! command -v qemu-aarch64 >/dev/null || ! command -v qemu-x86_64 >/dev/null; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null; then sudo="sudo"; else
      echo "error: qemu-user is missing; fix: as root run 'apt-get install qemu-user'" >&2
      exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q qemu-user >/dev/null \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q qemu-user >/dev/null; }
  echo "installed qemu-user ($(qemu-aarch64 --version | head -1))"
fi

mkdir -p "$work"
work=$(cd "$work" && pwd)
tmp=$(mktemp -d "$work/.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
byte_compile() {  # SYSROOT DIR...: the host's python3.11 if any (same .pyc magic for every 3.11.x), else the
  local root=$1; shift  # sysroot's own under emulation (~40 s)
  local py=(python3.11)
  command -v python3.11 >/dev/null || py=(qemu-aarch64 -L "$root" "$root/usr/bin/python3.11")
  "${py[@]}" -m compileall -q "$@" >/dev/null || echo "warning: byte-compiling $* failed; runs will be slower" >&2
}

if [ "$(cat "$work/sysroot/.installed" 2>/dev/null)" != "$sysroot_key" ]; then
  [ -f "$keyring" ] || { echo "error: no $keyring; fix: apt-get install debian-archive-keyring" >&2; exit 1; }
  echo "aarch64 sysroot: downloading arm64 bookworm $debs"
  apt_dir=$tmp/apt
  mkdir -p "$apt_dir"/{lists/partial,cache/archives/partial,sources.list.d,preferences.d} "$tmp/debs"
  : >"$apt_dir/status"
  # The machine's own Debian sources (the entries signed by Debian's archive keyring), asked for arm64.
  python3 "$repo/scripts/debian_sources.py" "$keyring" arm64 >"$apt_dir/sources.list"
  [ -s "$apt_dir/sources.list" ] || {
    echo "error: no Debian source signed by $keyring in /etc/apt; fix: add Debian's bookworm sources" >&2; exit 1; }
  apt=(apt-get -q -o APT::Architecture=arm64 -o APT::Architectures=arm64
    -o Dir::State="$apt_dir" -o Dir::State::Lists="$apt_dir/lists" -o Dir::State::status="$apt_dir/status"
    -o Dir::Cache="$apt_dir/cache" -o Dir::Etc::SourceList="$apt_dir/sources.list"
    -o Dir::Etc::SourceParts="$apt_dir/sources.list.d" -o Dir::Etc::PreferencesParts="$apt_dir/preferences.d"
    -o Dir::Etc::Preferences="$apt_dir/preferences")
  [ "$(id -u)" != 0 ] || apt+=(-o APT::Sandbox::User=root)  # _apt cannot write into a private dir
  "${apt[@]}" update >"$tmp/apt.log" 2>&1 || { cat "$tmp/apt.log" >&2; exit 1; }
  # shellcheck disable=SC2086
  (cd "$tmp/debs" && "${apt[@]}" download $debs) >>"$tmp/apt.log" 2>&1 || { cat "$tmp/apt.log" >&2; exit 1; }
  for deb in "$tmp"/debs/*.deb; do dpkg-deb -x "$deb" "$tmp/sysroot"; done
  rm -rf "$tmp"/sysroot/usr/share/{doc,man,lintian}
  # An empty ld.so.cache / ld.so.preload so the guest's loader never reads the host's x86-64 ones.
  : >"$tmp/sysroot/etc/ld.so.cache"
  : >"$tmp/sysroot/etc/ld.so.preload"
  byte_compile "$tmp/sysroot" "$tmp/sysroot/usr/lib/python3.11"
  echo "$sysroot_key" >"$tmp/sysroot/.installed"
  rm -rf "$work/sysroot" "$work/cpu"  # cpu/: per-CPU prefixes that emulation.py links into the sysroot
  mv "$tmp/sysroot" "$work/sysroot"
fi

if [ "$(cat "$work/site/.installed" 2>/dev/null)" != "$site_key" ]; then
  echo "aarch64 site: pip download $site_key (manylinux aarch64 cp311 wheels)"
  platforms=(--platform manylinux2014_aarch64)
  for m in $(seq 17 36); do platforms+=(--platform "manylinux_2_${m}_aarch64"); done  # bookworm: glibc 2.36
  python3 -m pip download -q --disable-pip-version-check --only-binary=:all: --no-deps "${platforms[@]}" \
    --python-version 3.11 --implementation cp --abi cp311 -d "$tmp/wheels" "numpy==$numpy_v" "onnxruntime==$ort_v"
  for whl in "$tmp"/wheels/*.whl; do python3 -m zipfile -e "$whl" "$tmp/site"; done
  byte_compile "$work/sysroot" "$tmp/site"
  echo "$site_key" >"$tmp/site/.installed"
  rm -rf "$work/site"
  mv "$tmp/site" "$work/site"
fi
rm -rf "$tmp"
echo "aarch64 targets ready in $work ($(du -sh "$work" | cut -f1)): python3.11 + $site_key"
