#!/bin/sh
# raftgres package, after unpacking: deb "configure", rpm 1 (install) or
# 2 (upgrade). Creates only what is missing and leaves alone what an
# administrator set up; never enables or starts the service (a member must
# be configured first, and an upgrade restarts nothing: the operator
# restarts one host at a time).
set -e

case "$1" in
configure | 1 | 2) ;;
*) exit 0 ;; # deb abort-upgrade, abort-remove, abort-deconfigure: nothing to redo
esac

# The agent and its PostgreSQL run as postgres. PostgreSQL's own packages
# create this user too; on a host where they have not run yet, create it
# as they would.
if ! getent group postgres >/dev/null; then
	groupadd --system postgres
fi
if ! getent passwd postgres >/dev/null; then
	useradd --system --gid postgres --home-dir /var/lib/postgresql --no-create-home \
		--shell /bin/bash --comment "PostgreSQL administrator" postgres
fi
if [ ! -d /var/lib/postgresql ]; then
	install -d -m 0755 -o postgres -g postgres /var/lib/postgresql
fi

# The agent's state (Raft log, snapshots, secrets): its own, mode 0700.
if [ ! -d /var/lib/raftgres ]; then
	install -d -m 0700 -o postgres -g postgres /var/lib/raftgres
fi

# The package unpacks /etc/raftgres and its config as root; the agent
# reads them as postgres, and the config holds passwords (mode 0600).
# Only what is still root's is handed over: an owner the administrator
# chose is kept. The config's content is dpkg's and rpm's business
# (conffile, %config(noreplace)): never written here.
if [ "$(stat -c %u /etc/raftgres)" = 0 ]; then
	chown postgres:postgres /etc/raftgres
	chmod 0750 /etc/raftgres
fi
if [ -f /etc/raftgres/raftgres.yml ] && [ "$(stat -c %u /etc/raftgres/raftgres.yml)" = 0 ]; then
	chown postgres:postgres /etc/raftgres/raftgres.yml
	chmod 0600 /etc/raftgres/raftgres.yml
fi

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	if systemctl is-active --quiet raftgres; then
		echo "raftgres: the running agent is still the old version; restart it (systemctl restart raftgres) when this host's turn comes"
	fi
fi
exit 0
