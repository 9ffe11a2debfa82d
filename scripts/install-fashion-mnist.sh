#!/usr/bin/env bash
# The built-in dataset: Debian's dataset-fashion-mnist (files under /usr/share/datasets/fashion-mnist).
set -euo pipefail
dir=/usr/share/datasets/fashion-mnist
if [ -f "$dir/t10k-labels-idx1-ubyte.gz" ]; then
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null; then sudo="sudo"; else
    echo "error: Fashion-MNIST is missing; fix: as root run 'apt-get install dataset-fashion-mnist'" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -q dataset-fashion-mnist >/dev/null \
  || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null; }
echo "installed dataset-fashion-mnist into $dir"
