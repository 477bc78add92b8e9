#!/usr/bin/env bash
# Installs the Debian packages the tests start for real, once; does nothing when they are there.
set -euo pipefail
need=()
command -v sqlite3 >/dev/null || need+=(sqlite3)
command -v chromium >/dev/null || need+=(chromium)  # tests/browser (status page)
# tests/integration/test_influx*.py start their own influxd and victoria-metrics on free loopback ports
# (a system influxdb service the package may start on :8086 is neither used nor touched).
[ -x /usr/bin/influxd ] || need+=(influxdb)
[ -x /usr/bin/victoria-metrics ] || need+=(victoria-metrics)
# tests/storage (and the suites on PostgreSQL) initdb a throwaway cluster of their own on a free loopback port
# (the cluster the package may create and start on :5432 is neither used nor touched).
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "tests need Debian packages: ${need[*]} (run: sudo apt-get install ${need[*]})" >&2
  exit 1
fi
echo "installing Debian packages: ${need[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
