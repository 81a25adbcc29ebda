// evsecd client snippet for libocpp-based stations, using sdbus-c++ (v1 API,
// 1.x; Debian 12 ships 1.2.0). Not built by CI; build by hand with:
//
//   g++ -std=c++17 cpp_client.cpp $(pkg-config --cflags --libs sdbus-c++)
//
// (Debian 12: apt-get install libsdbus-c++-dev libsystemd-dev; the .pc file
// requires libsystemd, but the -dev package does not pull it in.)
//
// It does what an OCPP client needs for security profile 3 (TLS with a
// client certificate): the CSMS leaf's key, chain and key password, the
// CSMS trust anchors, and installing the chain a CSMS sends in
// CertificateSigned. Usage:
//
//   ./a.out                  # read-only: leaf info, CA installed, verify location
//   ./a.out chain.pem        # also UpdateLeafCertificate(chain, "CSMS")
//
// The system bus is used unless EVSEC_BUS_ADDRESS names another one (e.g. the
// address `cargo run --example demo` prints).

#include <sdbus-c++/sdbus-c++.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>

namespace {

const char* const kService = "org.evsec.EvseSecurity1";
const char* const kPath = "/org/evsec/EvseSecurity1";
const char* const kInterface = "org.evsec.EvseSecurity1";

// What libocpp's TLS setup needs from GetLeafCertificateInfo.
struct CsmsLeaf {
    std::string key_path;
    std::string chain_path;
    std::string password; // empty: the key is not encrypted
    int32_t count = 0;
};

// Keys are left out of the a{sv} when they have no value (e.g. "password"),
// so look before get<>(), which throws on a missing or mistyped value.
template <typename T>
T lookup(const std::map<std::string, sdbus::Variant>& info, const std::string& key, T fallback) {
    auto it = info.find(key);
    if (it == info.end() || !it->second.containsValueOfType<T>()) {
        return fallback;
    }
    return it->second.get<T>();
}

} // namespace

int main(int argc, char* argv[]) {
    try {
        const char* address = std::getenv("EVSEC_BUS_ADDRESS");
        auto connection = address != nullptr ? sdbus::createSessionBusConnectionWithAddress(address)
                                             : sdbus::createSystemBusConnection();
        // Synchronous calls only, so the proxy can borrow the connection
        // without running an event loop; the connection must outlive it.
        auto proxy = sdbus::createProxy(*connection, kService, kPath);

        // Security profile 3: a TLS client certificate. include_ocsp is
        // false because OCSP stapling is the SECC's business, not the OCPP
        // client's.
        std::string status;
        std::map<std::string, sdbus::Variant> info;
        proxy->callMethod("GetLeafCertificateInfo")
            .onInterface(kInterface)
            .withArguments(std::string("CSMS"), std::string("PEM"), false)
            .storeResultsTo(status, info);
        std::cout << "GetLeafCertificateInfo(CSMS, PEM, false): " << status << "\n";
        if (status == "Accepted") {
            CsmsLeaf leaf{lookup<std::string>(info, "key", ""),
                          // Prefer the chain file: the CSMS needs the
                          // Sub-CAs to verify the client certificate.
                          lookup<std::string>(info, "certificate",
                                              lookup<std::string>(info, "certificate_single", "")),
                          lookup<std::string>(info, "password", ""),
                          lookup<int32_t>(info, "certificate_count", 0)};
            std::cout << "  key:         " << leaf.key_path << "\n"
                      << "  chain:       " << leaf.chain_path << " (" << leaf.count
                      << " certificate(s))\n"
                      << "  password:    " << (leaf.password.empty() ? "(none)" : "(set)") << "\n";
        }
        // Any other status (NotFound, NotFoundValid, PrivateKeyNotFound) means
        // no usable client certificate: fall back to a lower profile or
        // trigger a SignCertificate request, as OCPP A02/A03 describe.

        bool installed = false;
        proxy->callMethod("IsCaCertificateInstalled")
            .onInterface(kInterface)
            .withArguments(std::string("CSMS"))
            .storeResultsTo(installed);
        std::cout << "IsCaCertificateInstalled(CSMS): " << std::boolalpha << installed << "\n";

        // A file or a hashed directory, usable as the CAfile/CApath that
        // verifies the CSMS server certificate; "" when none is installed.
        std::string verify_location;
        proxy->callMethod("GetVerifyLocation")
            .onInterface(kInterface)
            .withArguments(std::string("CSMS"))
            .storeResultsTo(verify_location);
        std::cout << "GetVerifyLocation(CSMS): \"" << verify_location << "\"\n";

        if (argc > 1) {
            // The chain from CertificateSigned, leaf first, as received.
            std::ifstream in(argv[1]);
            if (!in) {
                std::cerr << "cannot read " << argv[1] << "\n";
                return 1;
            }
            std::ostringstream chain;
            chain << in.rdbuf();
            std::string result;
            proxy->callMethod("UpdateLeafCertificate")
                .onInterface(kInterface)
                .withArguments(chain.str(), std::string("CSMS"))
                .storeResultsTo(result);
            // A domain outcome, not an exception: map it to the
            // CertificateSignedResponse status ("Accepted" or "Rejected").
            std::cout << "UpdateLeafCertificate(CSMS): " << result << "\n";
        }
    } catch (const sdbus::Error& e) {
        // InvalidArgs, AccessDenied or org.evsec.EvseSecurity1.Error.Internal,
        // or no daemon on the bus (ServiceUnknown).
        std::cerr << "D-Bus error " << e.getName() << ": " << e.getMessage() << "\n";
        return 1;
    }
    return 0;
}
