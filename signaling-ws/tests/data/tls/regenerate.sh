#!/usr/bin/env bash
# Regenerates the TLS test fixtures of signaling-ws (the unit tests of `signaling_ws::tls`):
# a CA, a leaf certificate for `localhost` signed by it (EC P-256) with its key in PKCS#8 and
# SEC1, and an RSA leaf with its key in PKCS#1. TEST KEYS ONLY: they are public.
# Valid for 100 years so that the tests never expire. Needs openssl 3.
set -euo pipefail
cd "$(dirname "$0")"
days=36500
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca-key.pem \
    -out ca.pem -days "$days" -subj "/CN=signaling test CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign
leaf() { # name keyfile
    openssl req -new -key "$2" -out "$1.csr" -subj "/CN=localhost"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days "$days" \
        -out "$1-cert.pem" -extfile <(printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n')
    rm "$1.csr"
}
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec-pkcs8.pem
openssl ec -in ec-pkcs8.pem -out ec-sec1.pem            # BEGIN EC PRIVATE KEY
leaf ec ec-pkcs8.pem
openssl genrsa -traditional -out rsa-pkcs1.pem 2048      # BEGIN RSA PRIVATE KEY
leaf rsa rsa-pkcs1.pem
cat ec-cert.pem ca.pem > ec-chain.pem                     # leaf first, then its issuer
openssl pkcs8 -topk8 -in ec-pkcs8.pem -passout pass:secret -out ec-encrypted.pem
rm -f ca-key.pem ca.srl
