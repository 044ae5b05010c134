/*
 * pxar's filename hash (pxar-format §7.1): SipHash-2-4 under the fixed key k0, k1 below, the
 * same function as pxarHashTs in src/pxar/format.ts, which stays as the fallback and the
 * reference (the tests compare both):
 *   pxarHash(name: Uint8Array) -> bigint (unsigned 64-bit)
 * An archive hashes every name it writes (goodbye tables) and every name it looks up. In
 * TypeScript a hash costs 1-4 microseconds (64-bit words in 32-bit halves, and the BigInt made
 * from them); here it is the cost of the call.
 */
#include "burrow_native.h"

#define K0 UINT64_C(0x83ac3f1cfbb450db)
#define K1 UINT64_C(0xaa4f1b6879369fbd)

static inline uint64_t rotl64(uint64_t x, unsigned b) { return (x << b) | (x >> (64 - b)); }

#define SIPROUND                                                                                                       \
  do {                                                                                                                 \
    v0 += v1;                                                                                                          \
    v1 = rotl64(v1, 13) ^ v0;                                                                                          \
    v0 = rotl64(v0, 32);                                                                                               \
    v2 += v3;                                                                                                          \
    v3 = rotl64(v3, 16) ^ v2;                                                                                          \
    v0 += v3;                                                                                                          \
    v3 = rotl64(v3, 21) ^ v0;                                                                                          \
    v2 += v1;                                                                                                          \
    v1 = rotl64(v1, 17) ^ v2;                                                                                          \
    v2 = rotl64(v2, 32);                                                                                               \
  } while (0)

/* Little-endian load whatever the host order and alignment. */
static inline uint64_t load_le64(const uint8_t *p) {
  uint64_t m = 0;
  for (int i = 7; i >= 0; i--) m = (m << 8) | p[i];
  return m;
}

static uint64_t siphash24(const uint8_t *data, size_t len) {
  uint64_t v0 = K0 ^ UINT64_C(0x736f6d6570736575);
  uint64_t v1 = K1 ^ UINT64_C(0x646f72616e646f6d);
  uint64_t v2 = K0 ^ UINT64_C(0x6c7967656e657261);
  uint64_t v3 = K1 ^ UINT64_C(0x7465646279746573);
  size_t whole = len - (len % 8);
  for (size_t i = 0; i < whole; i += 8) {
    uint64_t m = load_le64(data + i);
    v3 ^= m;
    SIPROUND;
    SIPROUND;
    v0 ^= m;
  }
  /* The last block: the remaining bytes, and the length's low byte in the top byte. */
  uint64_t last = (uint64_t)(len & 0xff) << 56;
  for (size_t i = whole; i < len; i++) last |= (uint64_t)data[i] << (8 * (i - whole));
  v3 ^= last;
  SIPROUND;
  SIPROUND;
  v0 ^= last;
  v2 ^= 0xff;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  return v0 ^ v1 ^ v2 ^ v3;
}

static napi_value pxar_hash(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  const uint8_t *data = NULL;
  size_t len = 0;
  if (!burrow_get_args(env, info, 1, argv) || !burrow_get_bytes(env, argv[0], &data, &len)) return NULL;
  napi_value result;
  CHECK(napi_create_bigint_uint64(env, siphash24(data, len), &result));
  return result;
}

napi_status burrow_register_pxarhash(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"pxarHash", NULL, pxar_hash, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
