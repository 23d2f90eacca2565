#!/usr/bin/env bash
# Run a command beside a throwaway PostgreSQL server, for the test suite's PostgreSQL pass:
#
#   scripts/with-postgres.sh .venv/bin/pytest -m "not slow"
#
# The command gets TRIALPATH_TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:PORT/postgres
# (tests/conftest.py then gives each test a database of its own). The cluster lives in a
# temporary folder (data, log, unix socket), listens on 127.0.0.1 only, on a free port, trusts
# local connections, and is stopped and deleted when the command ends, however it ends. Its
# exit status is the command's.
#
# Debian's postgresql is installed when missing and we are root with apt-get. Without
# PostgreSQL this warns and runs nothing (exit 0), or with --or-sqlite first runs the command
# anyway, without the variable (the tests then run on SQLite only); under CI=true it fails.
set -euo pipefail

or_sqlite=false
if [ "${1:-}" = "--or-sqlite" ]; then
	or_sqlite=true
	shift
fi
COMMAND=("$@")

unavailable() {
	if [ "${CI:-}" = true ]; then
		echo "error: $1: CI runs the tests on PostgreSQL too" >&2
		exit 1
	fi
	if $or_sqlite; then
		echo "warning: $1: the tests run on SQLite only" >&2
		trap - EXIT
		[ -n "${TMP:-}" ] && rm -rf "$TMP"
		exec "${COMMAND[@]}"
	fi
	echo "warning: $1: the PostgreSQL pass of the tests is skipped" >&2
	exit 0
}

bindir() {
	local dir
	for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n -r); do
		if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
			echo "$dir"
			return
		fi
	done
	if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
		dirname "$(command -v initdb)"
	fi
}

[ "$#" -gt 0 ] || { echo "usage: $0 [--or-sqlite] COMMAND [ARGS...]" >&2; exit 2; }

root=false
[ "$(id -u)" = 0 ] && root=true
PG_BIN=$(bindir)
if [ -z "$PG_BIN" ]; then
	if $root && command -v apt-get >/dev/null 2>&1; then
		echo "installing Debian's postgresql for the PostgreSQL pass of the tests"
		# The package would create (and try to start) a "main" cluster on port 5432: we want
		# only our own throwaway one.
		mkdir -p /etc/postgresql-common/createcluster.d
		echo "create_main_cluster = false" \
			>/etc/postgresql-common/createcluster.d/50-trialpath-no-main-cluster.conf
		export DEBIAN_FRONTEND=noninteractive
		(apt-get install -y -q --no-install-recommends postgresql >/dev/null \
			|| (apt-get update -q >/dev/null \
				&& apt-get install -y -q --no-install-recommends postgresql >/dev/null)) \
			|| unavailable "could not install postgresql with apt-get"
		PG_BIN=$(bindir)
	fi
	[ -n "$PG_BIN" ] || unavailable "PostgreSQL's initdb and pg_ctl are missing (apt-get install postgresql as root)"
fi

# PostgreSQL refuses to run as root: as root, the cluster belongs to the postgres user.
if $root; then
	id postgres >/dev/null 2>&1 || unavailable "there is no postgres user to run the server"
	as_pg() { runuser -u postgres -- "$@"; }
else
	as_pg() { "$@"; }
fi

# As root, in /tmp rather than $TMPDIR: the postgres user must be able to reach it.
if $root; then
	TMP=$(mktemp -d /tmp/trialpath-pg.XXXXXX)
else
	TMP=$(mktemp -d "${TMPDIR:-/tmp}/trialpath-pg.XXXXXX")
fi
DATA="$TMP/data"
PG_PID=""

cleanup() {
	local status=$?
	if [ -z "$PG_PID" ] && [ -f "$DATA/postmaster.pid" ]; then
		PG_PID=$(head -n 1 "$DATA/postmaster.pid")
	fi
	if [ -n "$PG_PID" ]; then
		as_pg "$PG_BIN/pg_ctl" stop -D "$DATA" -m fast -w -t 30 >/dev/null 2>&1 \
			|| kill -QUIT "$PG_PID" 2>/dev/null || true
		# pg_ctl waits for the postmaster; make sure it is gone before deleting its folder.
		for _ in $(seq 50); do kill -0 "$PG_PID" 2>/dev/null || break; sleep 0.1; done
	fi
	rm -rf "$TMP"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

$root && chown postgres: "$TMP"
as_pg "$PG_BIN/initdb" -D "$DATA" --auth=trust --username=postgres --encoding=UTF8 \
	--no-locale --no-sync >"$TMP/initdb.log" 2>&1 \
	|| { cat "$TMP/initdb.log" >&2; unavailable "initdb failed"; }
# A free port, asked of the system; another program may take it before the server does: retry.
for attempt in 1 2 3; do
	PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	# Durability is not wanted from a database deleted within minutes: no fsync, faster tests.
	if as_pg "$PG_BIN/pg_ctl" start -D "$DATA" -l "$TMP/server.log" -w -t 60 -o "\
-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$TMP \
-c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
		>/dev/null; then
		break
	fi
	[ "$attempt" = 3 ] && { cat "$TMP/server.log" >&2; unavailable "PostgreSQL did not start"; }
done
PG_PID=$(head -n 1 "$DATA/postmaster.pid")
echo "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT (pid $PG_PID): $*"

export TRIALPATH_TEST_DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:$PORT/postgres"
status=0
"$@" || status=$?
exit "$status"
