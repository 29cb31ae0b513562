#!/bin/sh
# raftgres package, after removal: deb "remove" or "purge", rpm 0 (erase).
#
# A purge deletes what the package created and nothing that holds data:
# dpkg itself deletes the config (a conffile); /etc/raftgres goes only if
# nothing else (certificates, keys) is left in it; /var/lib/raftgres, this
# member's Raft log and snapshots, goes only if empty. Deleting Raft state
# behind the operator's back could cost the cluster its majority or, after
# a reinstall, make this host rejoin with a history the others forgot: the
# operator removes it once the member has left (raftgres leave). The
# postgres user stays: PostgreSQL's own packages and data use it.
set -e

case "$1" in
purge)
	# The administrator's enablement (systemctl enable) outlives a remove
	# and dies with a purge.
	rm -f /etc/systemd/system/multi-user.target.wants/raftgres.service
	rmdir /etc/raftgres 2>/dev/null || true
	if [ -d /var/lib/raftgres ] && ! rmdir /var/lib/raftgres 2>/dev/null; then
		echo "raftgres: kept /var/lib/raftgres (this member's Raft state); delete it once the member has left the cluster"
	fi
	;;
0)
	# rpm has no purge: an erase keeps a changed config as .rpmsave and the
	# Raft state, and drops the enablement as rpm's own units do.
	rm -f /etc/systemd/system/multi-user.target.wants/raftgres.service
	rmdir /var/lib/raftgres 2>/dev/null || true
	;;
esac
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
exit 0
