#!/usr/bin/env python3
"""Minimal evsecd client for an OCPP stack, using jeepney (pure Python).

    pip install jeepney
    python3 examples/python_client.py                       # system bus
    python3 examples/python_client.py --bus unix:path=...   # e.g. the demo's bus

The bus is --bus ADDRESS, else $EVSEC_BUS_ADDRESS, else the system bus.
The functions below are meant to be copied; main() is a read-only demo.

Domain outcomes (e.g. "NotFound", "InvalidCertificateChain") come back as
result strings, exactly as spelled in the D-Bus contract. Only malformed
calls, missing rights and internal faults are D-Bus errors, which jeepney
raises as DBusErrorResponse.
"""

import argparse
import os
import sys

from jeepney import DBusAddress, DBusErrorResponse, new_method_call
from jeepney.io.blocking import open_dbus_connection
from jeepney.wrappers import unwrap_msg

EVSEC = DBusAddress(
    "/org/evsec/EvseSecurity1",
    bus_name="org.evsec.EvseSecurity1",
    interface="org.evsec.EvseSecurity1",
)

# The libdbus default; long enough for key generation, short enough that a
# stuck daemon does not hang the OCPP stack forever.
TIMEOUT_S = 25


def _call(conn, method, signature=None, body=()):
    """Call a method and return the reply body as a tuple.

    Raises DBusErrorResponse (with .name and .data) on a D-Bus error reply.
    """
    msg = new_method_call(EVSEC, method, signature, body)
    # unwrap_msg turns an error reply into DBusErrorResponse.
    return unwrap_msg(conn.send_and_get_reply(msg, timeout=TIMEOUT_S))


def _decode_info(info):
    """Decode a CertificateInfo a{sv} into a plain dict.

    jeepney hands each variant over as (signature, value); the daemon's
    signatures are fixed by the contract, so callers only need the value.
    Keys absent in the reply (e.g. "password" when none is set) stay absent.
    """
    return {key: value for key, (_signature, value) in info.items()}


def is_ca_certificate_installed(conn, ca_type):
    """IsCaCertificateInstalled: ca_type is V2G, MO, CSMS or MF. Returns bool."""
    (installed,) = _call(conn, "IsCaCertificateInstalled", "s", (ca_type,))
    return installed


def get_leaf_certificate_info(conn, leaf_type, encoding="PEM", include_ocsp=False):
    """GetLeafCertificateInfo: returns (status, info dict).

    leaf_type is CSMS or V2G (MF/MO give "Rejected"); encoding PEM or DER.
    info holds key, certificate, certificate_single, certificate_count,
    password and, with include_ocsp, ocsp = [((alg, name_hash, key_hash,
    serial), der_path_or_empty), ...]. It is empty unless status is
    "Accepted".
    """
    status, info = _call(conn, "GetLeafCertificateInfo", "ssb",
                         (leaf_type, encoding, include_ocsp))
    return status, _decode_info(info)


def get_installed_certificates(conn, certificate_types=()):
    """GetInstalledCertificates: returns (status, chains).

    certificate_types: e.g. ["V2GRootCertificate", "V2GCertificateChain"];
    empty means all. Each chain is (certificate_type, hash_data,
    [child_hash_data, ...]) and hash data is (algorithm, issuer_name_hash,
    issuer_key_hash, serial_number) - the shape OCPP's
    CertificateHashDataChain needs.
    """
    status, chains = _call(conn, "GetInstalledCertificates", "as",
                           (list(certificate_types),))
    return status, chains


def verify_certificate(conn, chain_pem, leaf_types):
    """VerifyCertificate: chain PEM (leaf first) against the roots of
    leaf_types (e.g. ["MO", "V2G"]). Returns a CertificateValidationResult
    string such as "Valid" or "IssuerNotFound"."""
    (result,) = _call(conn, "VerifyCertificate", "sas", (chain_pem, list(leaf_types)))
    return result


def install_ca_certificate(conn, certificate_pem, ca_type):
    """InstallCaCertificate: one CA certificate PEM into the V2G, MO, CSMS or
    MF bundle. Returns an InstallCertificateResult string ("Accepted", ...)."""
    (result,) = _call(conn, "InstallCaCertificate", "ss", (certificate_pem, ca_type))
    return result


def delete_certificate(conn, hash_data):
    """DeleteCertificate: hash_data is (algorithm, issuer_name_hash,
    issuer_key_hash, serial_number) as OCPP sends it. Returns "Accepted",
    "Failed" (e.g. the station's own CSMS certificate) or "NotFound"."""
    (result,) = _call(conn, "DeleteCertificate", "(ssss)", (tuple(hash_data),))
    return result


def generate_certificate_signing_request(conn, leaf_type, country, organization,
                                         common_name, use_tpm=False):
    """GenerateCertificateSigningRequest: returns (status, csr_pem).

    The private key stays in the daemon's key directory; only the CSR comes
    back, so it can go straight into OCPP's SignCertificateRequest. csr_pem
    is "" unless status is "Accepted".
    """
    status, csr = _call(conn, "GenerateCertificateSigningRequest", "ssssb",
                        (leaf_type, country, organization, common_name, use_tpm))
    return status, csr


def update_leaf_certificate(conn, chain_pem, leaf_type):
    """UpdateLeafCertificate: the chain from OCPP's CertificateSigned (leaf
    first) for CSMS or V2G. Returns an InstallCertificateResult string."""
    (result,) = _call(conn, "UpdateLeafCertificate", "ss", (chain_pem, leaf_type))
    return result


def get_v2g_ocsp_request_data(conn):
    """GetV2gOcspRequestData: returns [(hash_data, responder_url), ...] for
    the SECC certificates, ready for OCPP's GetCertificateStatus."""
    (requests,) = _call(conn, "GetV2gOcspRequestData")
    return requests


def update_ocsp_cache(conn, hash_data, ocsp_response_b64):
    """UpdateOcspCache: ocsp_response_b64 is the base64 DER OCSPResponse, as
    OCPP's GetCertificateStatusResponse.ocspResult already carries it.
    Returns "Accepted", "NotFound" or "InvalidFormat"."""
    (result,) = _call(conn, "UpdateOcspCache", "(ssss)s",
                      (tuple(hash_data), ocsp_response_b64))
    return result


def get_leaf_expiry_days_count(conn, leaf_type):
    """GetLeafExpiryDaysCount: whole days the current CSMS or V2G leaf has
    left; 0 when there is no usable leaf (so renew on 0, too)."""
    (days,) = _call(conn, "GetLeafExpiryDaysCount", "s", (leaf_type,))
    return days


def _bus_from_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bus",
        default=os.environ.get("EVSEC_BUS_ADDRESS", "SYSTEM"),
        help="system, session or a D-Bus address such as unix:path=/run/x/bus "
             "(default: $EVSEC_BUS_ADDRESS, else the system bus)",
    )
    bus = parser.parse_args(argv).bus
    # Same spelling as `evsecd --bus system|session|ADDRESS`.
    return bus.upper() if bus.lower() in ("system", "session") else bus


def main(argv=None):
    bus = _bus_from_args(argv)
    try:
        conn = open_dbus_connection(bus=bus)
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        print(f"cannot connect to bus {bus!r}: {e}", file=sys.stderr)
        return 1
    try:
        with conn:
            for ca in ("V2G", "CSMS"):
                print(f"IsCaCertificateInstalled({ca}): "
                      f"{is_ca_certificate_installed(conn, ca)}")

            status, chains = get_installed_certificates(conn)
            print(f"GetInstalledCertificates: {status}")
            for cert_type, hash_data, children in chains:
                print(f"  {cert_type}: serial {hash_data[3]}, "
                      f"{len(children)} child certificate(s)")

            for leaf, ocsp in (("V2G", True), ("CSMS", False)):
                status, info = get_leaf_certificate_info(conn, leaf, "PEM", ocsp)
                print(f"GetLeafCertificateInfo({leaf}, PEM, {ocsp}): {status}")
                for key, value in sorted(info.items()):
                    if key == "password":
                        value = "(set)"  # never print secrets in logs
                    print(f"  {key}: {value}")
    except DBusErrorResponse as e:
        # e.name is the error name, e.data the reply body (usually a message).
        message = e.data[0] if e.data else ""
        print(f"D-Bus error {e.name}: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
