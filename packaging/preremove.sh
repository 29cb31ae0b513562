#!/bin/sh
# raftgres package, before removal: deb "remove", rpm 0 (erase). The binary
# is about to go: stop the agent, which stops this host's PostgreSQL cleanly
# (and hands the primary role to another member first if it held it). An
# upgrade (deb "upgrade", rpm 1) stops nothing.
set -e

case "$1" in
remove | 0)
	if [ -d /run/systemd/system ] && systemctl is-active --quiet raftgres; then
		echo "raftgres: stopping the agent and this host's PostgreSQL"
		# A stop that fails (it timed out, and systemd killed what was
		# left) must not block the removal, as for Debian's own units.
		systemctl stop raftgres || true
	fi
	;;
esac
exit 0
