#!/usr/bin/env bash
# Installs what `make demo` and `make test` need on Debian 12 and is run by
# both (and by .ci/run) before anything else:
#   postgresql-15  PostgreSQL itself (initdb, postgres, pg_basebackup, pg_rewind)
#   iproute2       ip, for the tests that cut links in network namespaces
#   haproxy        the HAProxy test runs examples/haproxy.cfg
#   pgbackrest     the backup and restore tests
#   make           make itself (and make package, which TestPackageDeb runs)
#   rpm            TestPackageDeb lists the .rpm's files with rpm -qpl
#   patroni, etcd-server
#                  TestMigrateFromPatroni runs a Patroni 3.0.2 + etcd 3.4 cluster
# and the postgres OS user, which the agents run PostgreSQL as.
#
# Nothing missing: exits 0 at once and prints nothing. Something missing,
# as root: apt-get installs it, then stops what the packages started (the
# Debian PostgreSQL cluster, and the etcd service where systemd runs: the
# tests run their own on free ports). Something missing, not root: prints
# the one command to run and exits 1.
set -euo pipefail
# haproxy lives in /usr/sbin, which is not on a user's PATH on Debian.
PATH=$PATH:/usr/sbin:/sbin

need=()
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15)
command -v ip >/dev/null || need+=(iproute2)
command -v haproxy >/dev/null || need+=(haproxy)
command -v pgbackrest >/dev/null || need+=(pgbackrest)
command -v make >/dev/null || need+=(make)
command -v rpm >/dev/null || need+=(rpm)
{ command -v patroni && command -v patronictl; } >/dev/null || need+=(patroni)
command -v etcd >/dev/null || need+=(etcd-server)
has_user=true
id postgres >/dev/null 2>&1 || has_user=false

if [ ${#need[@]} -eq 0 ] && $has_user; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  if [ ${#need[@]} -gt 0 ]; then
    echo "install-deps: missing ${need[*]}; as root this script installs them, or run:" >&2
    echo "sudo apt-get install -y ${need[*]}" >&2
  else # postgresql-common, a dependency of postgresql-15, creates it
    echo "install-deps: no postgres user; as root this script creates it, or run:" >&2
    echo "sudo useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres" >&2
  fi
  exit 1
fi

if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need[@]}"
  # The Debian packages start their own PostgreSQL cluster and etcd
  # service; the tests and the demo run their own, so stop those.
  if command -v pg_lsclusters >/dev/null; then
    pg_lsclusters -h 2>/dev/null | while read -r ver name _; do
      pg_ctlcluster "$ver" "$name" stop >/dev/null 2>&1 || true
    done
  fi
  if [ -d /run/systemd/system ]; then
    systemctl stop etcd 2>/dev/null || true
    systemctl disable etcd 2>/dev/null || true
  fi
  # Without systemd an etcd the package started is left running: it
  # listens on 2379, which no test uses.
fi
id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
