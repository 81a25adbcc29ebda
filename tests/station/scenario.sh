#!/bin/sh
# The station in a box: run by evsec-scenario.service inside a booted
# systemd-nspawn container (see tests/station.rs). It installs the package,
# plays the station's roles as real Unix users over the system bus, and
# records one line per check in /evsec-results/results:
#   ok NAME
#   FAIL NAME: what was expected and what was seen
# tests/station.rs asserts that every check it knows reported ok.
set -u

PKG=/evsec-test/evsec.deb
OUT=/evsec-results
R=$OUT/results
W=/var/tmp/evsec-pki
DEST=org.evsec.EvseSecurity1
OBJ=/org/evsec/EvseSecurity1
STORE=/var/lib/evsec/certs
PASSWORD="station-key-pw-5f3a9c"
: > "$R"

ok() { echo "ok $1" >> "$R"; }
fail() { echo "FAIL $1: $2" >> "$R"; }
note() { echo "$*" >> "$OUT/log"; }
# check NAME EXPECTED ACTUAL
check() {
    if [ "$2" = "$3" ]; then ok "$1"; else fail "$1" "expected [$2], got [$3]"; fi
}
# check_has NAME NEEDLE HAYSTACK
check_has() {
    case "$3" in
        *"$2"*) ok "$1" ;;
        *) fail "$1" "[$2] not in [$(printf %s "$3" | head -c 600)]" ;;
    esac
}
# check_lacks NAME NEEDLE HAYSTACK
check_lacks() {
    case "$3" in
        *"$2"*) fail "$1" "[$2] found" ;;
        *) ok "$1" ;;
    esac
}
# bus USER METHOD [SIGNATURE ARGS...]: busctl on the system bus as USER,
# JSON out.
bus() {
    user=$1
    shift
    runuser -u "$user" -- busctl --system --json=short call -- "$DEST" "$OBJ" "$DEST" "$@" 2>&1
}
# leaf_info USER TYPE: GetLeafCertificateInfo as USER; sets info, and key
# and chain (the chain file, else the single file) from it.
leaf_info() {
    info=$(bus "$1" GetLeafCertificateInfo ssb "$2" PEM false)
    note "$2 leaf info for $1: $info"
    key=$(printf %s "$info" | jq -r '.data[1].key.data')
    chain=$(printf %s "$info" | jq -r '(.data[1].certificate // .data[1].certificate_single).data')
}
# data JSON: the reply's first value.
data() { printf %s "$1" | jq -r '.data[0]' 2>/dev/null; }
# data_field JSON KEY: a value of the reply's CertificateInfo.
data_field() { printf %s "$1" | jq -r ".data[1].$2.data" 2>/dev/null; }
# wait_active PREVIOUS_PID: until evsecd runs with another main PID.
wait_active() {
    i=0
    while [ $i -lt 100 ]; do
        pid=$(systemctl show -p MainPID --value evsecd)
        if [ "$(systemctl is-active evsecd)" = active ] && [ "$pid" != 0 ] && [ "$pid" != "$1" ]; then
            return 0
        fi
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}
tree_digest() {
    (cd /var/lib/evsec && find . -type f ! -name .evsecd.lock ! -name .evsecd-parse-cache | LC_ALL=C sort | xargs -r sha256sum | sha256sum | cut -d' ' -f1)
}
# wait_port PORT: until something listens on 127.0.0.1:PORT.
wait_port() {
    i=0
    while [ $i -lt 100 ]; do
        ss -Hltn "sport = :$1" | grep -q . && return 0
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}

# --- a test PKI, made with the openssl CLI ----------------------------------
mkdir -p "$W"
chmod 755 "$W"
root() { # NAME CN [CURVE DIGEST]
    openssl req -x509 -newkey ec -pkeyopt "ec_paramgen_curve:${3:-P-256}" "-${4:-sha256}" -nodes \
        -keyout "$W/$1.key" -out "$W/$1.pem" -subj "/CN=$2" -days 3650 \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>>"$OUT/log"
}
cat > "$W/leaf.ext" <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyAgreement
extendedKeyUsage=serverAuth,clientAuth
authorityInfoAccess=OCSP;URI:http://ocsp.station.test/
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF
issue() { # CA CSR OUT [DIGEST]
    openssl x509 -req -in "$2" -CA "$W/$1.pem" -CAkey "$W/$1.key" "-${4:-sha256}" \
        -set_serial "0x$(openssl rand -hex 8)" -days 30 -extfile "$W/leaf.ext" \
        -out "$3" 2>>"$OUT/log"
}
root v2groot "V2G Station Test Root"
root moroot "MO Station Test Root"
root csmsroot "CSMS Station Test Root"
root mfroot "MF Station Test Root"
# ISO 15118-20: P-521 with ECDSA-SHA512.
root v2g20root "V2G20 Station Test Root" P-521 sha512
root oemroot "OEM Station Test Root" P-521 sha512
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-521 -nodes \
    -keyout "$W/vehicle.key" -out "$W/vehicle.csr" -subj "/CN=VEHICLE-0001" 2>>"$OUT/log"
issue oemroot "$W/vehicle.csr" "$W/vehicle.pem" sha512
# The CSMS server's TLS certificate, and the firmware signer, under their
# roots.
for name in csmsserver:csmsroot:csms.example mfsigner:mfroot:Firmware-Signer; do
    leaf=${name%%:*}; rest=${name#*:}; ca=${rest%%:*}; cn=${rest#*:}
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$W/$leaf.key" -out "$W/$leaf.csr" -subj "/CN=$cn" 2>>"$OUT/log"
    issue "$ca" "$W/$leaf.csr" "$W/$leaf.pem"
done
chmod 644 "$W"/*.pem
chmod 600 "$W"/*.key

# --- install -----------------------------------------------------------------
dpkg -i "$PKG" > "$OUT/dpkg-install.log" 2>&1
check install.dpkg 0 $?
check install.active_when_dpkg_returns active "$(systemctl is-active evsecd)"
check install.no_restarts 0 "$(systemctl show -p NRestarts --value evsecd)"
check install.config_mode "640 root evsec" "$(stat -c '%a %U %G' /etc/evsec/evsec.toml)"
check_lacks install.no_unknown_user "Unknown username" "$(journalctl -b -u dbus -o cat)"
check_lacks install.no_refused_name "not allowed to own" "$(journalctl -b -o cat)"
check_lacks install.no_failed_start "Failed with result" "$(journalctl -b -u evsecd -o cat)"
check_lacks install.dpkg_quiet "did not start" "$(cat "$OUT/dpkg-install.log")"

# The station's roles as real users.
# (Debian has a group "operator" already: useradd --user-group would fail.)
useradd --system --no-create-home --groups evsec-write,evsec-keys ocpp
useradd --system --no-create-home --groups evsec-read,evsec-keys secc
useradd --system --no-create-home --groups evsec-read station-operator
useradd --system --no-create-home stranger
operator=station-operator

# Keys are encrypted from now on; the unit's sandbox stays as shipped.
sed -i "s|^# private_key_password = \"\"|private_key_password = \"$PASSWORD\"|" /etc/evsec/evsec.toml
pid=$(systemctl show -p MainPID --value evsecd)
systemctl restart evsecd
wait_active "$pid"
check config.restarted active "$(systemctl is-active evsecd)"

# --- the OCPP client installs the roots ---------------------------------------
for pair in V2G:v2groot MO:moroot CSMS:csmsroot MF:mfroot; do
    ca=${pair%%:*}; file=${pair#*:}
    reply=$(bus ocpp InstallCaCertificate ss "$(cat "$W/$file.pem")" "$ca")
    check "roots.install_$ca" Accepted "$(data "$reply")"
done
reply=$(bus ocpp InstallCaCertificate ss "$(cat "$W/csmsserver.pem")" CSMS)
check roots.leaf_refused InvalidCertificateChain "$(data "$reply")"
check roots.v2g_installed true "$(data "$(bus secc IsCaCertificateInstalled s V2G)")"

# --- CSRs, signed by the test CA, and the leaves installed --------------------
csr_leaf() { # TYPE CN CA OUT [DIGEST]
    reply=$(bus ocpp GenerateCertificateSigningRequest ssssb "$1" DE "Station Test" "$2" false)
    check "csr.$1_status" Accepted "$(data "$reply")"
    printf %s "$reply" | jq -r '.data[1]' > "$W/$1.csr"
    check "csr.$1_subject" "C=DE, O=Station Test, CN=$2, DC=CPO" \
        "$(openssl req -in "$W/$1.csr" -noout -subject -nameopt sep_comma_plus_space | sed 's/^subject=//')"
    issue "$3" "$W/$1.csr" "$4" "${5:-sha256}"
    chmod 644 "$4"
    reply=$(bus ocpp UpdateLeafCertificate ss "$(cat "$4")" "$1")
    check "leaf.$1_install" Accepted "$(data "$reply")"
}
csr_leaf V2G SECC-0001 v2groot "$W/secc.pem"
csr_leaf CSMS CP-0001 csmsroot "$W/csms.pem"

# --- key files as the sandboxed daemon wrote them ------------------------------
for pair in V2G:cso CSMS:csms; do
    leaf=${pair%%:*}
    set -- "$STORE/client/${pair#*:}"/*.key
    check "keys.one_$leaf" 1 $#
    check "keys.mode_$leaf" "640 evsec evsec-keys" "$(stat -c '%a %U %G' "$1")"
    check_has "keys.encrypted_$leaf" "BEGIN ENCRYPTED PRIVATE KEY" "$(head -n 1 "$1")"
done

# --- the SECC serves TLS with what GetLeafCertificateInfo names -----------------
leaf_info secc V2G
check secc.info_status Accepted "$(data "$info")"
pw=$(printf %s "$info" | jq -r '.data[1].password.data')
check secc.password "$PASSWORD" "$pw"
# The password goes to openssl in a file: on a command line, the journal
# would record it (pam's _CMDLINE of runuser).
install -m 0400 -o secc /dev/null "$W/secc.pw"
printf %s "$pw" > "$W/secc.pw"
install -m 0400 -o ocpp /dev/null "$W/ocpp.pw"
printf %s "$PASSWORD" > "$W/ocpp.pw"
op_info=$(bus "$operator" GetLeafCertificateInfo ssb V2G PEM false)
check secc.operator_gets_paths "$key" "$(printf %s "$op_info" | jq -r '.data[1].key.data')"
check secc.operator_gets_no_password null "$(printf %s "$op_info" | jq -r '.data[1].password')"
check secc.key_readable_by_secc yes "$(runuser -u secc -- test -r "$key" && echo yes)"
check secc.key_unreadable_by_operator no "$(runuser -u "$operator" -- test -r "$key" && echo yes || echo no)"
runuser -u secc -- timeout 60 openssl s_server -accept 127.0.0.1:15118 -cert "$chain" -key "$key" \
    -pass "file:$W/secc.pw" -naccept 1 -quiet > /dev/null 2> "$OUT/s_server-v2g.err" &
wait_port 15118
hs=$(echo | timeout 20 openssl s_client -connect 127.0.0.1:15118 -CAfile "$W/v2groot.pem" \
    -verify_return_error -brief 2>&1)
check secc.tls_exit 0 $?
cat "$OUT/s_server-v2g.err" >> "$OUT/log"
check_has secc.tls_verified "Verification: OK" "$hs"
check_has secc.tls_peer "CN = SECC-0001" "$hs"
wait

# The OCPP client: mutual TLS to a CSMS, its own key as client certificate
# and the CSMS roots from GetVerifyFile.
leaf_info ocpp CSMS
check ocpp.info_status Accepted "$(data "$info")"
csms_roots=$(data "$(bus ocpp GetVerifyFile s CSMS)")
timeout 60 openssl s_server -accept 127.0.0.1:8443 -cert "$W/csmsserver.pem" -key "$W/csmsserver.key" \
    -Verify 1 -CAfile "$W/csmsroot.pem" -verify_return_error -naccept 1 -quiet \
    > /dev/null 2> "$OUT/s_server-csms.err" &
wait_port 8443
hs=$(echo | runuser -u ocpp -- timeout 20 openssl s_client -connect 127.0.0.1:8443 \
    -cert "$chain" -key "$key" -pass "file:$W/ocpp.pw" -CAfile "$csms_roots" \
    -verify_return_error -brief 2>&1)
check ocpp.mtls_exit 0 $?
check_has ocpp.mtls_verified "Verification: OK" "$hs"
wait
check_has ocpp.csms_saw_client "CN = CP-0001" "$(openssl x509 -in "$chain" -noout -subject -nameopt oneline)"

# --- OCSP: request data, a response from openssl ocsp, the cache ---------------
req=$(bus secc GetV2gOcspRequestData)
note "V2G OCSP request data: $req"
hash=$(printf %s "$req" | jq -r '.data[0][0][0] | join(" ")')
check ocsp.one_request 1 "$(printf %s "$req" | jq '.data[0] | length')"
serial=$(openssl x509 -in "$W/secc.pem" -noout -serial | cut -d= -f2)
check ocsp.request_serial "$(echo "$serial" | sed 's/^0*//' | tr A-F a-f)" \
    "$(echo "$hash" | cut -d' ' -f4 | sed 's/^0*//' | tr A-F a-f)"
printf 'V\t%s\t\t%s\tunknown\t%s\n' "$(date -u -d '+30 days' +%y%m%d%H%M%SZ)" "$serial" \
    "$(openssl x509 -in "$W/secc.pem" -noout -subject -nameopt compat | sed 's/^subject=//')" > "$W/index.txt"
openssl ocsp -issuer "$W/v2groot.pem" -cert "$W/secc.pem" -no_nonce -reqout "$W/req.der" 2>>"$OUT/log"
openssl ocsp -index "$W/index.txt" -rsigner "$W/v2groot.pem" -rkey "$W/v2groot.key" \
    -CA "$W/v2groot.pem" -reqin "$W/req.der" -respout "$W/resp.der" -ndays 7 2>>"$OUT/log"
# shellcheck disable=SC2086
reply=$(bus ocpp UpdateOcspCache "(ssss)s" $hash "$(base64 -w0 "$W/resp.der")")
check ocsp.update Accepted "$(data "$reply")"
info=$(bus secc GetLeafCertificateInfo ssb V2G PEM true)
cached=$(printf %s "$info" | jq -r '.data[1].ocsp.data[0][1]')
check ocsp.cached_bytes same "$(cmp -s "$cached" "$W/resp.der" && echo same || echo differ)"
status=$(runuser -u secc -- openssl ocsp -respin "$cached" -issuer "$W/v2groot.pem" \
    -cert "$W/secc.pem" -CAfile "$W/v2groot.pem" -no_nonce 2>&1)
check_has ocsp.openssl_good "secc.pem: good" "$status"

# --- ISO 15118-20: a P-521 leaf beside the -2 one, TLS 1.3 to a known OEM's car -
for pair in V2G:v2g20root OEM:oemroot; do
    reply=$(bus ocpp InstallCaCertificate ss "$(cat "$W/${pair#*:}.pem")" "${pair%%:*}")
    check "iso20.install_${pair#*:}" Accepted "$(data "$reply")"
done
csr_leaf V2G20 SECC-20-0001 v2g20root "$W/secc20.pem" sha512
info=$(bus secc GetLeafCertificateInfoForId ssb V2G20 SECC-20-0001 false)
note "V2G20 leaf info for secc: $info"
check iso20.info_status Accepted "$(data "$info")"
check iso20.key_algorithm P521 "$(printf %s "$info" | jq -r '.data[1].key_algorithm.data')"
check iso20.v2g_still_p256 P256 "$(data_field "$(bus secc GetLeafCertificateInfo ssb V2G PEM false)" key_algorithm)"
key20=$(printf %s "$info" | jq -r '.data[1].key.data')
chain20=$(printf %s "$info" | jq -r '.data[1].certificate_single.data')
oem_roots=$(data "$(bus secc GetVerifyFile s OEM)")
runuser -u secc -- timeout 60 openssl s_server -accept 127.0.0.1:15119 -cert "$chain20" -key "$key20" \
    -pass "file:$W/secc.pw" -tls1_3 -ciphersuites TLS_AES_256_GCM_SHA384 \
    -Verify 1 -CAfile "$oem_roots" -verify_return_error -naccept 1 -quiet \
    > /dev/null 2> "$OUT/s_server-v2g20.err" &
wait_port 15119
hs=$(echo | timeout 20 openssl s_client -connect 127.0.0.1:15119 -CAfile "$W/v2g20root.pem" \
    -cert "$W/vehicle.pem" -key "$W/vehicle.key" -verify_return_error -brief 2>&1)
check iso20.tls_exit 0 $?
wait
cat "$OUT/s_server-v2g20.err" >> "$OUT/log"
check_has iso20.tls13 "Protocol version: TLSv1.3" "$hs"
check_has iso20.tls_cipher "Ciphersuite: TLS_AES_256_GCM_SHA384" "$hs"
check_has iso20.tls_verified "Verification: OK" "$hs"
check_has iso20.tls_peer "CN = SECC-20-0001" "$hs"

# --- OCPP 2.1 certificate status: asked by readers, recorded by the OCPP client -
req=$(bus secc GetCertificateStatusRequestData s "$(cat "$W/secc.pem")")
note "status request data: $req"
check ocpp21.status_request_by_reader 1 "$(printf %s "$req" | jq '.data[0] | length')"
check ocpp21.status_request_url "http://ocsp.station.test/" "$(printf %s "$req" | jq -r '.data[0][0][1][0]')"
hash=$(printf %s "$req" | jq -r '.data[0][0][0] | join(" ")')
until=$(( $(date +%s) + 3600 ))
# shellcheck disable=SC2086
check_has ocpp21.update_denied_to_reader "Access denied" "$(bus secc UpdateCertificateStatus "(ssss)ssx" $hash Revoked OCSP $until)"
# shellcheck disable=SC2086
check_has ocpp21.confirm_denied_to_reader "Access denied" "$(bus secc ConfirmCertificateInUse "(ssss)" $hash)"
# shellcheck disable=SC2086
check ocpp21.update_status Accepted "$(data "$(bus ocpp UpdateCertificateStatus "(ssss)ssx" $hash Revoked OCSP $until)")"
check ocpp21.verify_revoked Revoked "$(data "$(bus secc VerifyCertificate sas "$(cat "$W/secc.pem")" 1 V2G)")"
check ocpp21.record_owner "644 evsec" "$(stat -c '%a %U' "$STORE/.evsecd-certificate-status")"
# The same hash data again: the newer entry replaces the older.
# shellcheck disable=SC2086
check ocpp21.update_good Accepted "$(data "$(bus ocpp UpdateCertificateStatus "(ssss)ssx" $hash Good OCSP $until)")"
check ocpp21.verify_good_again Valid "$(data "$(bus secc VerifyCertificate sas "$(cat "$W/secc.pem")" 1 V2G)")"

# --- firmware downloaded into the OCPP client's own /tmp -----------------------
runuser -u ocpp -- sh -c 'umask 077; head -c 300000 /dev/urandom > /tmp/firmware.bin'
openssl dgst -sha256 -sign "$W/mfsigner.key" -out "$W/fw.sig" /tmp/firmware.bin
base64 -w0 "$W/fw.sig" > "$W/fw.sig.b64"
chmod 644 "$W/fw.sig.b64"
out=$(runuser -u ocpp -- evsecctl --json verify-file /tmp/firmware.bin "$W/mfsigner.pem" "$W/fw.sig.b64" 2>&1)
check firmware.fd_valid '{"valid":true}' "$(printf %s "$out" | jq -c .)"
reply=$(bus ocpp VerifyFileSignature sss /tmp/firmware.bin "$(cat "$W/mfsigner.pem")" "$(cat "$W/fw.sig.b64")")
check firmware.path_hidden_by_sandbox false "$(data "$reply")"
runuser -u ocpp -- sh -c 'printf x >> /tmp/firmware.bin'
out=$(runuser -u ocpp -- evsecctl --json verify-file /tmp/firmware.bin "$W/mfsigner.pem" "$W/fw.sig.b64" 2>&1)
check firmware.fd_tampered '{"valid":false}' "$(printf %s "$out" | jq -c .)"
out=$(runuser -u stranger -- evsecctl verify-file /tmp/firmware.bin "$W/mfsigner.pem" "$W/fw.sig.b64" 2>&1)
check_has firmware.stranger_cannot_open "Permission denied" "$out"

# --- the operator ---------------------------------------------------------------
out=$(runuser -u "$operator" -- evsecctl status 2>&1)
check operator.status_exit 0 $?
check_has operator.status_version "$(dpkg-query -W -f='${Version}' evsec | cut -d- -f1)" "$out"
out=$(runuser -u "$operator" -- evsecctl list 2>&1)
check operator.list_exit 0 $?
check_has operator.list_v2g_root "V2G Station Test Root" "$out"
check_has operator.list_secc_leaf "SECC-0001" "$out"
out=$(runuser -u "$operator" -- evsecctl install-ca MO "$W/moroot.pem" 2>&1)
check operator.install_exit 3 $?
check_has operator.install_denied "AccessDenied" "$out"

# --- the stranger: every method denied, introspection allowed -------------------
xml=$(runuser -u stranger -- busctl --system --xml-interface introspect "$DEST" "$OBJ" 2>&1)
check_has stranger.introspect '<interface name="org.evsec.EvseSecurity1">' "$xml"
methods=$(printf %s "$xml" | sed -n '/<interface name="org.evsec.EvseSecurity1">/,/<\/interface>/p' |
    sed -n 's/.*<method name="\([A-Za-z0-9]*\)".*/\1/p')
count=0
denied=0
for m in $methods; do
    count=$((count + 1))
    out=$(runuser -u stranger -- dbus-send --system --print-reply --dest="$DEST" "$OBJ" "$DEST.$m" 2>&1)
    case "$out" in
        *org.freedesktop.DBus.Error.AccessDenied*) denied=$((denied + 1)) ;;
        *) fail "stranger.denied_$m" "$out" ;;
    esac
done
check stranger.all_methods_denied "$count" "$denied"
check_has stranger.method_count_sane 1 "$([ "$count" -ge 18 ] && echo 1)"
for m in Get GetAll; do
    out=$(runuser -u stranger -- dbus-send --system --print-reply --dest="$DEST" "$OBJ" \
        "org.freedesktop.DBus.Properties.$m" string:$DEST string:Version 2>&1)
    check_has "stranger.properties_$m" "org.freedesktop.DBus.Error.AccessDenied" "$out"
done

# --- a SIGKILL: systemd restarts it, and what was acknowledged is kept ----------
reply=$(bus ocpp DeleteCertificate "(ssss)" $(bus ocpp GetInstalledCertificates as 1 MORootCertificate |
    jq -r '.data[1][0][1] | join(" ")'))
check restart.acknowledged_delete Accepted "$(data "$reply")"
listing=$(bus root GetInstalledCertificates as 0 | jq -c .)
tree=$(tree_digest)
pid=$(systemctl show -p MainPID --value evsecd)
systemctl kill -s KILL evsecd
if wait_active "$pid"; then ok restart.back_after_kill; else fail restart.back_after_kill "$(systemctl status evsecd 2>&1 | tail -n 5)"; fi
check restart.same_listing "$listing" "$(bus root GetInstalledCertificates as 0 | jq -c .)"
check restart.same_files "$tree" "$(tree_digest)"
# The parse cache is the daemon's own file, never readable by others.
check restart.parse_cache_mode "600 evsec" "$(stat -c '%a %U' "$STORE/.evsecd-parse-cache")"
check restart.mo_gone false "$(data "$(bus secc IsCaCertificateInstalled s MO)")"

# --- stopped: the next call starts it through bus activation -------------------
systemctl stop evsecd
check activation.stopped inactive "$(systemctl is-active evsecd)"
reply=$(bus secc GetVerifyFile s V2G)
check activation.answer "$STORE/ca/v2g/V2G_ROOT_CA.pem" "$(data "$reply")"
check activation.active active "$(systemctl is-active evsecd)"

# --- the journal: what and why, and no secrets ---------------------------------
log=$(journalctl -b -u evsecd -o cat)
printf '%s\n' "$log" > "$OUT/journal.txt"
for ca in V2G MO CSMS MF; do
    check_has "journal.ca_installed_$ca" "CA certificate installed ca=$ca subject=$ca Station Test Root" "$log"
done
check_has journal.csr_v2g "CSR generated leaf=V2G cn=SECC-0001" "$log"
check_has journal.csr_csms "CSR generated leaf=CSMS cn=CP-0001" "$log"
check_has journal.leaf_v2g "leaf certificate installed leaf=V2G subject=SECC-0001" "$log"
check_has journal.leaf_csms "leaf certificate installed leaf=CSMS subject=CP-0001" "$log"
check_has journal.ocsp "OCSP response cached subject=SECC-0001" "$log"
check_has journal.delete "deleting CA certificate ca=MO subject=MO Station Test Root" "$log"
check_has journal.refusal_says_why "CA certificate refused ca=CSMS subject=csms.example result=InvalidCertificateChain" "$log"
check_has journal.file_check_says_why "file signature not checked: /tmp/firmware.bin: No such file or directory" "$log"
check_has journal.kill_recorded "Main process exited, code=killed, status=9/KILL" "$(journalctl -b -u evsecd -o cat)"
journalctl -b -o export > "$OUT/journal.export"
check_lacks journal.no_password "$PASSWORD" "$(cat "$OUT/journal.export")"
leaks=0
for key in "$STORE"/client/cso/*.key "$STORE"/client/csms/*.key; do
    for line in $(grep -v -- '-----' "$key"); do
        grep -qF -- "$line" "$OUT/journal.export" && leaks=$((leaks + 1))
    done
done
check journal.no_key_bytes 0 "$leaks"
rm -f "$OUT/journal.export"

# --- upgrade, remove, purge -----------------------------------------------------
tree=$(tree_digest)
dpkg -i "$PKG" > "$OUT/dpkg-reinstall.log" 2>&1
check upgrade.dpkg 0 $?
check upgrade.active active "$(systemctl is-active evsecd)"
check upgrade.store_kept "$tree" "$(tree_digest)"
check upgrade.config_kept 1 "$(grep -c "^private_key_password = \"$PASSWORD\"" /etc/evsec/evsec.toml)"
check upgrade.config_mode "640 root evsec" "$(stat -c '%a %U %G' /etc/evsec/evsec.toml)"
check upgrade.leaf_served Accepted "$(data "$(bus secc GetLeafCertificateInfo ssb V2G PEM false)")"

dpkg -r evsec > "$OUT/dpkg-remove.log" 2>&1
check remove.dpkg 0 $?
check remove.stopped inactive "$(systemctl is-active evsecd)"
check remove.store_kept "$tree" "$(tree_digest)"
check remove.config_kept yes "$(test -f /etc/evsec/evsec.toml && echo yes)"

dpkg --purge evsec > "$OUT/dpkg-purge.log" 2>&1
check purge.dpkg 0 $?
check purge.store_gone no "$(test -e /var/lib/evsec && echo yes || echo no)"
check purge.config_gone no "$(test -e /etc/evsec && echo yes || echo no)"
check purge.user_kept evsec "$(getent passwd evsec | cut -d: -f1)"

echo done > "$OUT/done"
