#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need
# (OpenSSH server and client, iproute2 for network namespaces, rsync and nncp
# for the benchmark's smoke run, busybox and bsdtar as other hosts' tar), then
# gofmt, go vet,
# go test -race, a short run of every fuzz test, and the cross-builds.
# Integration tests start their own sshd and namespaces; they need root.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v /usr/sbin/sshd >/dev/null 2>&1 || need+=(openssh-server)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v sha256sum >/dev/null 2>&1 || need+=(coreutils)
command -v rsync >/dev/null 2>&1 || need+=(rsync)   # the benchmark smoke test compares with it
command -v scp >/dev/null 2>&1 || need+=(openssh-client)
command -v nncp-file >/dev/null 2>&1 || need+=(nncp)   # optional peer in the benchmark
command -v busybox >/dev/null 2>&1 || need+=(busybox)   # TestBatchOtherTars: busybox tar on the host
command -v bsdtar >/dev/null 2>&1 || need+=(libarchive-tools)   # TestBatchOtherTars: bsdtar on the host
if ((${#need[@]})); then
	echo "== installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
mkdir -p /run/sshd

echo "== gofmt"
bad=$(gofmt -l .)
if [[ -n "$bad" ]]; then
	echo "gofmt needed on:"; echo "$bad"; exit 1
fi

echo "== go vet"
go vet ./...

echo "== go test -race"
go test -race -count=1 -timeout 20m ./...

echo "== fuzz (a few seconds each)"
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
		echo "-- $pkg $f"
		# A failing input is a failure; the fuzzer's own trouble on a busy
		# machine (a worker it thinks hung) is shown and tried once more.
		for try in 1 2; do
			if go test -run '^$' -fuzz "^$f\$" -fuzztime 3s "$pkg" >/tmp/messor-fuzz.log 2>&1; then
				break
			fi
			cat /tmp/messor-fuzz.log
			if grep -q 'Failing input written to' /tmp/messor-fuzz.log || [ "$try" = 2 ]; then
				exit 1
			fi
			echo "-- $pkg $f: the fuzzer failed without a failing input; once more"
		done
	done
done

echo "== cross-builds"
for target in linux/arm64 android/arm64 darwin/arm64 windows/amd64; do
	echo "-- $target"
	GOOS=${target%/*} GOARCH=${target#*/} CGO_ENABLED=0 go build -o /dev/null ./cmd/messor
done
echo "== all tests passed"
