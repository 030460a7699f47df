/* How tests/test_weights_security.py's forged weights file was made (not run by the tests).
 *
 * Finds an 8-byte nonce such that SHA-256(payload || nonce) starts with a given 32-bit prefix,
 * e.g. torchvision's b0353104 from mobilenet_v2-b0353104.pth: about 2**32 tries, minutes on one
 * core with OpenSSL's SHA-256.
 *
 *   gcc -O2 -o forge tests/forge_sha256_prefix.c -lcrypto -Wno-deprecated-declarations
 *   ./forge payload.pkl b0353104 0 40000000000     # prints the nonce in hex, exit 0 when found
 */
#include <openssl/sha.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s PAYLOAD PREFIX_HEX8 START COUNT\n", argv[0]);
        return 2;
    }
    unsigned char buf[4096 + 8], md[SHA256_DIGEST_LENGTH];
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 2; }
    size_t n = fread(buf, 1, 4096, f);
    fclose(f);
    uint32_t want = (uint32_t)strtoul(argv[2], NULL, 16);
    uint64_t start = strtoull(argv[3], NULL, 10), count = strtoull(argv[4], NULL, 10);
    for (uint64_t i = start; i < start + count; i++) {
        for (int k = 0; k < 8; k++) buf[n + k] = (unsigned char)(i >> (56 - 8 * k));  /* big-endian */
        SHA256_CTX c;
        SHA256_Init(&c);
        SHA256_Update(&c, buf, n + 8);
        SHA256_Final(md, &c);
        uint32_t got = ((uint32_t)md[0] << 24) | ((uint32_t)md[1] << 16) | ((uint32_t)md[2] << 8) | md[3];
        if (got == want) {
            printf("%016llx\n", (unsigned long long)i);
            return 0;
        }
    }
    return 1;
}
