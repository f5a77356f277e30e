#!/bin/sh
# Fuzz campaign: runs every network-facing fuzz target of agua, one at a
# time, and reports the ones that found a crash.
#
#   test/fuzz/run.sh                 all network-facing targets, FUZZTIME each
#   test/fuzz/run.sh Session Proxy   only targets whose "pkg Target" matches
#   FUZZTIME=30s test/fuzz/run.sh    a short smoke run
#
# Environment:
#   FUZZTIME      time per target (default 10m)
#   FUZZPARALLEL  fuzzing workers per target (default 1, so FUZZTIME is CPU
#                 time: 10m = 10 CPU-minutes; raise it on an idle machine)
#   FUZZ_SAVE_CORPUS=1
#                 after each target, copy the corpus Go grew in its cache
#                 into the package's testdata/fuzz/<Target>/ to commit it
#
# A crash leaves its input in <pkg>/testdata/fuzz/<Target>/ (Go's own
# behaviour): commit it with the fix, and it is replayed by every plain
# `go test` from then on. Exit status: 0 if no target failed.
set -u
cd "$(dirname "$0")/../.." || exit 2

FUZZTIME=${FUZZTIME:-10m}
FUZZPARALLEL=${FUZZPARALLEL:-1}

# Network-facing targets: package and fuzz function.
TARGETS="
./internal/smtpd FuzzSession
./internal/smtpd FuzzAddress
./internal/pop3d FuzzSession
./internal/imapd FuzzSession
./internal/imapd FuzzLiteralInjection
./internal/imapd FuzzFolderName
./internal/outbound FuzzReadReply
./internal/connsrv FuzzReadLine
./internal/connsrv FuzzDecodeSASL
./internal/directory FuzzNormaliseAddress
./internal/directory FuzzVerifyPassword
./shield FuzzProxyHeader
./shield FuzzParseRules
./internal/config FuzzParse
./internal/autoconfig FuzzAutodiscover
"
# Targets that read only the server's own files, left out on purpose.
NOT_NETWORK="FuzzLoadState FuzzHistoryFile FuzzSizeFromName FuzzEscapeName FuzzParseUIDList FuzzOpenCorrupt FuzzToWire FuzzSign"

# A new fuzz target that is in neither list is reported, so the campaign
# cannot silently miss it.
for name in $(grep -rhoE '^func (Fuzz[A-Za-z0-9_]+)' --include='*_test.go' . | sed 's/^func //' | sort -u); do
	case " $(echo $TARGETS) $NOT_NETWORK " in
	*" $name "*) ;;
	*) echo "run.sh: $name is not listed in test/fuzz/run.sh (network-facing or not?)" >&2 ;;
	esac
done

cache=$(go env GOCACHE)/fuzz
module=$(go list -m)
echo "$TARGETS" | while read -r pkg target; do
	[ -n "$pkg" ] || continue
	if [ $# -gt 0 ]; then
		match=""
		for pat in "$@"; do
			case "$pkg $target" in *"$pat"*) match=1 ;; esac
		done
		[ -n "$match" ] || continue
	fi
	echo "== $pkg $target ($FUZZTIME, $FUZZPARALLEL worker(s))"
	log=$(mktemp)
	if go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" -parallel "$FUZZPARALLEL" "$pkg" >"$log" 2>&1; then
		tail -n 2 "$log"
	else
		tail -n 40 "$log"
		echo "FAILED: $pkg $target"
		grep -o 'testdata/fuzz/[^ ]*' "$log" | sed "s|^|  crasher: ${pkg#./}/|"
		echo "$pkg $target" >>"${TMPDIR:-/tmp}/agua-fuzz-failed.$$"
	fi
	rm -f "$log"
	if [ "${FUZZ_SAVE_CORPUS:-}" = 1 ] && [ -d "$cache/$module/${pkg#./}/$target" ]; then
		mkdir -p "$pkg/testdata/fuzz/$target"
		cp -n "$cache/$module/${pkg#./}/$target"/* "$pkg/testdata/fuzz/$target/" 2>/dev/null
		echo "  corpus saved to $pkg/testdata/fuzz/$target"
	fi
done

failures="${TMPDIR:-/tmp}/agua-fuzz-failed.$$"
if [ -s "$failures" ]; then
	echo
	echo "Targets that found a crash:"
	sed 's/^/  /' "$failures"
	rm -f "$failures"
	exit 1
fi
rm -f "$failures"
echo
echo "No crashes."
