#!/usr/bin/env bash
# Installs the Debian packages the benchmarks drive or measure against, once; does nothing when they are there.
# - wrk: the load generator of benchmarks/ingest.py and workers.py (C, little CPU per request).
# - nginx-light: nginx, the `return 202` ceiling. Never used as the system service: benchmarks/ceilings.py
#   starts its own nginx (its own configuration, prefix and pid file in a temp dir, on a free loopback
#   port) and stops it by its PID. So that installing it does not start one on :80, the install runs
#   with a policy-rc.d that forbids starting services (Debian's invoke-rc.d honours it).
set -euo pipefail
need=()
command -v wrk >/dev/null || need+=(wrk)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || need+=(nginx-light)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "benchmarks need Debian packages: ${need[*]} (run: sudo bash scripts/bench-deps.sh)" >&2
  exit 1
fi
echo "installing Debian packages: ${need[*]}"
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
