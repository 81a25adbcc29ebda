#!/usr/bin/env python3
"""The OCPP 2.1 client's side of evsec's certificate management, over D-Bus.

    pip install ocpp==2.1.0 jeepney==0.9.0
    python3 examples/ocpp_station.py --bus ADDRESS --pki DIR

It plays three rounds a station's OCPP client plays with its CSMS, each
against evsecd (contract sections 5 and 11.2):

1. A02: SignCertificate -> CertificateSigned -> reconnect -> confirm. The
   daemon makes the key and the CSR; the new client certificate is
   installed; after the reconnect with it, ConfirmCertificateInUse lets the
   old one go (A02.FR.10 errata).
2. M05 with AdditionalRootCertificateCheck on: a CSMS root not signed by
   the one in use is Rejected; its successor is Accepted; after the
   reconnect, ConfirmCertificateInUse removes the fallback (M05.FR.13).
3. M07: GetCertificateChainStatus for a contract chain, built from
   GetCertificateStatusRequestData, and the CSMS's answer kept with
   UpdateCertificateStatus, after which nothing is left to ask.

Every OCPP message it would send or receive is built with the mobilityhouse
`ocpp` package and validated against that package's OCPP 2.1 JSON schemas
before use. The CSMS side is played locally: DIR holds its CA
(csms-ca.pem, csms-ca.key), its next root (next-root.pem, signed by the
CA), a root of someone else (stranger-root.pem), and a contract chain
(contract-chain.pem). The openssl CLI signs the CSR and computes hash data,
as a CSMS would.

Exit status 0 when every round went as OCPP says it must; otherwise 1 with
the step that did not.
"""

import argparse
import asyncio
import datetime
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict

from jeepney import DBusAddress, new_method_call
from jeepney.io.blocking import open_dbus_connection
from jeepney.wrappers import unwrap_msg
from ocpp.charge_point import remove_nones, snake_to_camel_case
from ocpp.messages import Call, CallResult, validate_payload
from ocpp.v21 import call, call_result, datatypes, enums

EVSEC = DBusAddress(
    "/org/evsec/EvseSecurity1",
    bus_name="org.evsec.EvseSecurity1",
    interface="org.evsec.EvseSecurity1",
)
TIMEOUT_S = 25


class Refused(Exception):
    """A step did not go as OCPP says it must."""


def expect(what, got, wanted):
    if got != wanted:
        raise Refused(f"{what}: expected {wanted!r}, got {got!r}")


def evsec(conn, method, signature=None, body=()):
    """Calls evsecd and returns the reply body."""
    msg = new_method_call(EVSEC, method, signature, body)
    return unwrap_msg(conn.send_and_get_reply(msg, timeout=TIMEOUT_S))


_ids = iter(range(1, 1_000_000))


def ocpp_message(payload, result=False):
    """The OCPP-J message of a payload dataclass, validated against the
    package's OCPP 2.1 schema of its action; returned as the JSON text."""
    action = type(payload).__name__
    body = snake_to_camel_case(remove_nones(asdict(payload)))
    if result:
        message = CallResult(unique_id=str(next(_ids)), payload=body, action=action)
    else:
        message = Call(unique_id=str(next(_ids)), action=action, payload=body)
    asyncio.run(validate_payload(message, "2.1"))
    text = message.to_json()
    print(("<- " if result else "-> ") + text[:160] + ("…" if len(text) > 160 else ""))
    return text


def openssl(*args, data=None):
    return subprocess.run(
        ["openssl", *args], input=data, capture_output=True, text=True, check=True
    ).stdout


def hash_data(cert_pem, issuer_pem):
    """OCPP CertificateHashData of a certificate, as a CSMS computes it:
    the RFC 6960 CertID that `openssl ocsp` prints."""
    with tempfile.TemporaryDirectory() as d:
        cert, issuer = os.path.join(d, "cert.pem"), os.path.join(d, "issuer.pem")
        for path, text in ((cert, cert_pem), (issuer, issuer_pem)):
            with open(path, "w", encoding="ascii") as f:
                f.write(text)
        text = openssl(
            "ocsp", "-sha256", "-no_nonce", "-req_text", "-issuer", issuer, "-cert", cert
        ).replace("\\\n", "")
    field = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(":")
        field[key] = value.strip().lower()
    return (
        "SHA256",
        field["Issuer Name Hash"],
        field["Issuer Key Hash"],
        field["Serial Number"].lstrip("0") or "0",
    )


def csms_signs(csr, pki):
    """The CSMS signs the station's CSR with its CA."""
    with tempfile.TemporaryDirectory() as d:
        ext = os.path.join(d, "leaf.ext")
        with open(ext, "w", encoding="ascii") as f:
            f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                    "extendedKeyUsage=clientAuth\nsubjectKeyIdentifier=hash\n"
                    "authorityKeyIdentifier=keyid\n")
        return openssl(
            "x509", "-req", "-CA", os.path.join(pki, "csms-ca.pem"),
            "-CAkey", os.path.join(pki, "csms-ca.key"),
            "-set_serial", "0x" + os.urandom(8).hex(), "-days", "365", "-extfile", ext,
            data=csr,
        )


def read(pki, name):
    with open(os.path.join(pki, name), encoding="ascii") as f:
        return f.read()


def hash_type(h):
    return datatypes.CertificateHashDataType(
        hash_algorithm=h[0], issuer_name_hash=h[1], issuer_key_hash=h[2], serial_number=h[3]
    )


def client_certificate_renewal(conn, pki):
    print("A02: renewing the station's client certificate")
    status, csr = evsec(conn, "GenerateCertificateSigningRequest", "ssssb",
                        ("CSMS", "DE", "Example CPO", "CS-0001", False))
    expect("GenerateCertificateSigningRequest", status, "Accepted")
    ocpp_message(call.SignCertificate(
        csr=csr, certificate_type=enums.CertificateSigningUseEnumType.charging_station_certificate))
    ocpp_message(call_result.SignCertificate(status=enums.GenericStatusEnumType.accepted), result=True)

    # The CSMS's CertificateSigned, as it arrives.
    chain = csms_signs(csr, pki)
    ocpp_message(call.CertificateSigned(
        certificate_chain=chain,
        certificate_type=enums.CertificateSigningUseEnumType.charging_station_certificate))
    (installed,) = evsec(conn, "UpdateLeafCertificate", "ss", (chain, "CSMS"))
    expect("UpdateLeafCertificate", installed, "Accepted")
    ocpp_message(call_result.CertificateSigned(
        status=enums.CertificateSignedStatusEnumType.accepted), result=True)

    # Reconnect with what GetLeafCertificateInfo names: the new certificate.
    status, info = evsec(conn, "GetLeafCertificateInfo", "ssb", ("CSMS", "PEM", False))
    expect("GetLeafCertificateInfo", status, "Accepted")
    with open(info["certificate_single"][1], encoding="ascii") as f:
        expect("the selected certificate", f.read(), chain)
    status, infos = evsec(conn, "GetAllValidCertificatesInfo", "ssb", ("CSMS", "PEM", False))
    print(f"   before the confirm: {len(infos)} valid client certificate(s)")

    # The connection with it worked: the old one goes.
    (confirmed,) = evsec(conn, "ConfirmCertificateInUse", "(ssss)",
                         (hash_data(chain, read(pki, "csms-ca.pem")),))
    expect("ConfirmCertificateInUse", confirmed, "Accepted")
    status, infos = evsec(conn, "GetAllValidCertificatesInfo", "ssb", ("CSMS", "PEM", False))
    expect("client certificates after the confirm", len(infos), 1)


def root_rotation(conn, pki):
    print("M05: rotating the CSMS root with AdditionalRootCertificateCheck on")
    use = enums.InstallCertificateUseEnumType.csms_root_certificate

    def install(pem):
        ocpp_message(call.InstallCertificate(certificate=pem, certificate_type=use))
        (result,) = evsec(conn, "InstallCaCertificate", "ss", (pem, "CSMS"))
        status = (enums.InstallCertificateStatusEnumType.accepted if result == "Accepted"
                  else enums.InstallCertificateStatusEnumType.rejected)
        ocpp_message(call_result.InstallCertificate(status=status), result=True)
        return result

    expect("a root not signed by the one in use (M05.FR.11)",
           install(read(pki, "stranger-root.pem")), "InvalidSignature")
    expect("its successor (M05.FR.12)", install(read(pki, "next-root.pem")), "Accepted")
    status, chains = evsec(conn, "GetInstalledCertificates", "as", (["CSMSRootCertificate"],))
    expect("CSMS roots: the new one and its fallback", len(chains), 2)

    # The reconnect with the new root worked (M05.FR.13).
    new_root = hash_data(read(pki, "next-root.pem"), read(pki, "csms-ca.pem"))
    (confirmed,) = evsec(conn, "ConfirmCertificateInUse", "(ssss)", (new_root,))
    expect("ConfirmCertificateInUse", confirmed, "Accepted")
    status, chains = evsec(conn, "GetInstalledCertificates", "as", (["CSMSRootCertificate"],))
    expect("CSMS roots after the confirm", [tuple(c[1]) for c in chains], [new_root])


def chain_status(conn, pki):
    print("M07: GetCertificateChainStatus for a contract chain")
    chain = read(pki, "contract-chain.pem")
    (requests,) = evsec(conn, "GetCertificateStatusRequestData", "s", (chain,))
    if not requests:
        raise Refused("GetCertificateStatusRequestData: nothing to ask about")
    asked = []
    for h, urls in requests:
        # evsec lists OCSP responders when a certificate has any, else its
        # CRL distribution points; by convention a CRL's URL ends in .crl.
        source = (enums.CertificateStatusSourceEnumType.crl if urls and urls[0].endswith(".crl")
                  else enums.CertificateStatusSourceEnumType.ocsp)
        if not urls:
            print(f"   serial {h[3]}: no URL to ask, left out")
            continue
        asked.append((tuple(h), source))
        requests_info = datatypes.CertificateStatusRequestInfoType(
            certificate_hash_data=hash_type(h), source=source, urls=list(urls))
        ocpp_message(call.GetCertificateChainStatus(certificate_status_requests=[requests_info]))
    next_update = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=12)
    answer = call_result.GetCertificateChainStatus(certificate_status=[
        datatypes.CertificateStatusType(
            certificate_hash_data=hash_type(h), next_update=next_update.isoformat(),
            source=source, status=enums.CertificateStatusEnumType.good)
        for h, source in asked])
    ocpp_message(answer, result=True)
    for status in answer.certificate_status:
        h = status.certificate_hash_data
        (result,) = evsec(conn, "UpdateCertificateStatus", "(ssss)ssx", (
            (h.hash_algorithm, h.issuer_name_hash, h.issuer_key_hash, h.serial_number),
            status.status.value, status.source.value,
            int(datetime.datetime.fromisoformat(status.next_update).timestamp())))
        expect("UpdateCertificateStatus", result, "Accepted")
    (left,) = evsec(conn, "GetCertificateStatusRequestData", "s", (chain,))
    expect("members left to ask about (M07.FR.10/11)",
           [tuple(h) for h, urls in left if urls], [])
    (verdict,) = evsec(conn, "VerifyCertificate", "sas", (chain, ["MO"]))
    expect("VerifyCertificate of the contract chain", verdict, "Valid")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bus", default=os.environ.get("EVSEC_BUS_ADDRESS", "SYSTEM"))
    parser.add_argument("--pki", required=True, help="the CSMS side's files")
    args = parser.parse_args()
    conn = open_dbus_connection(bus=args.bus)
    try:
        client_certificate_renewal(conn, args.pki)
        root_rotation(conn, args.pki)
        chain_status(conn, args.pki)
    except Refused as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    print("all rounds done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
