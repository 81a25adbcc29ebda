#!/bin/bash
# GetVerifyFile and Peer.Ping latency (busctl, medians of 50, in µs) with the
# daemon idle and while 16 callers check the signature of a sparse 1 TiB
# file, and the daemon's CPU ticks after those callers left (equal ticks:
# the hashing stopped). Uses target/release/evsecd (`cargo build --release`).
# busctl's own start-up is in every figure: compare the two columns.
set -u
cd "$(dirname "$0")/.."
D=$(mktemp -d)
trap 'kill $DPID $BUSPID 2>/dev/null; pkill -f "$D/huge.bin" 2>/dev/null; rm -rf "$D"' EXIT
mkdir -p "$D/certs"
printf 'certs_directory = "%s/certs"\n[limits]\nmax_file_bytes = 1099511627776\n' "$D" > "$D/c.toml"
dbus-daemon --session --nofork --nopidfile --print-address=1 --address="unix:path=$D/bus" > "$D/addr" 2>/dev/null &
BUSPID=$!
sleep 0.3
A=$(head -n 1 "$D/addr")
target/release/evsecd --config "$D/c.toml" --bus "$A" 2> "$D/log" &
DPID=$!
sleep 1
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
timed() {
    for _ in $(seq 50); do
        s=$(date +%s%N)
        busctl --address "$A" call org.evsec.EvseSecurity1 /org/evsec/EvseSecurity1 "$@" > /dev/null
        e=$(date +%s%N)
        echo $(((e - s) / 1000))
    done | median
}
row() {
    echo "$1: GetVerifyFile $(timed org.evsec.EvseSecurity1 GetVerifyFile s V2G) µs, Peer.Ping $(timed org.freedesktop.DBus.Peer Ping) µs"
}
row idle
truncate -s 1T "$D/huge.bin"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$D/k" \
    -out "$D/c.pem" -subj /CN=x -days 1 2> /dev/null
for _ in $(seq 16); do
    busctl --address "$A" --timeout=3600 call -- org.evsec.EvseSecurity1 /org/evsec/EvseSecurity1 \
        org.evsec.EvseSecurity1 VerifyFileSignature sss "$D/huge.bin" "$(cat "$D/c.pem")" MAYCAQECAQE= \
        > /dev/null 2>&1 &
done
sleep 1
row "16 huge-file checks running"
pkill -f "$D/huge.bin"
sleep 2
first=$(awk '{print $14 + $15}' "/proc/$DPID/stat")
sleep 2
echo "daemon CPU ticks 2 s and 4 s after the callers left: $first, $(awk '{print $14 + $15}' "/proc/$DPID/stat")"
