#!/usr/bin/env bash
# OpenSSH's server for the device-bench tests (tests/targets/test_targets_ssh.py start their own sshd on
# 127.0.0.1 as a child process, with their own keys and config). Only installs the package when sshd is
# missing, and then keeps Debian's own ssh service from starting (the tests never need it listening).
set -euo pipefail
[ -x /usr/sbin/sshd ] && exit 0
sudo=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null; then sudo="sudo"; else
    echo "error: /usr/sbin/sshd is missing; fix: as root run 'apt-get install openssh-server'" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
# /etc/ssh/sshd_not_to_be_run: Debian's ssh.service and init script do not start sshd while it exists.
$sudo mkdir -p /etc/ssh
$sudo touch /etc/ssh/sshd_not_to_be_run
$sudo apt-get install -y -q openssh-server >/dev/null \
  || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q openssh-server >/dev/null; }
echo "installed openssh-server $(dpkg-query -W -f='${Version}' openssh-server) for the device tests; its service is off" \
  "(remove /etc/ssh/sshd_not_to_be_run to run it)"
