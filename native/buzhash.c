/*
 * The buzhash chunker's scan loop (pbs-protocol §9.1), the same algorithm as the TypeScript path
 * in src/chunker/buzhash.ts, which stays as the fallback and the reference:
 *   buzhashScan(state: Int32Array, data: Uint8Array, start) -> index in data just after the cut,
 *                                                              or -1 (no boundary in data[start..])
 * `state` is owned by the TS Chunker and shared with it so a call allocates nothing:
 *   [0] h (u32 bits)  [1] bytes in the current chunk  [2] min  [3] max  [4] mask  [5] threshold
 *   [6..7] unused     bytes 32..95: the last 64 bytes scanned, chunk position p in slot p & 63.
 * The table is PBS's; the TS module checks its SHA-256 and the tests compare both paths.
 *   buzhashKernel(mode?) -> "avx512" | "scalar": which hot loop runs; mode false forces the scalar
 *                          one, true restores the best the CPU has (for tests and benchmarks).
 *
 * Speed: the scalar loop is bound by the hash's dependency chain (rotate then xor, per byte) and
 * by four loads per byte; it runs about as fast as SHA-256 with the SHA extensions. On CPUs with
 * AVX-512 VBMI a vector kernel does 64 bytes per step, see scan_avx512 below.
 */
#include "burrow_native.h"

#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_AVX512_KERNEL 1
#include <immintrin.h>
#endif

#define WINDOW 64
#define STATE_INTS 24
#define RING_OFFSET 32

static const uint32_t TABLE[256] = {
    0x458be752, 0xc10748cc, 0xfbbcdbb8, 0x6ded5b68, 0xb10a82b5, 0x20d75648, 0xdfc5665f, 0xa8428801, 0x7ebf5191,
    0x841135c7, 0x65cc53b3, 0x280a597c, 0x16f60255, 0xc78cbc3e, 0x294415f5, 0xb938d494, 0xec85c4e6, 0xb7d33edc,
    0xe549b544, 0xfdeda5aa, 0x882bf287, 0x3116737c, 0x05569956, 0xe8cc1f68, 0x0806ac5e, 0x22a14443, 0x15297e10,
    0x50d090e7, 0x4ba60f6f, 0xefd9f1a7, 0x5c5c885c, 0x82482f93, 0x9bfd7c64, 0x0b3e7276, 0xf2688e77, 0x8fad8abc,
    0xb0509568, 0xf1ada29f, 0xa53efdfe, 0xcb2b1d00, 0xf2a9e986, 0x6463432b, 0x95094051, 0x5a223ad2, 0x9be8401b,
    0x61e579cb, 0x1a556a14, 0x5840fdc2, 0x9261ddf6, 0xcde002bb, 0x52432bb0, 0xbf17373e, 0x7b7c222f, 0x2955ed16,
    0x9f10ca59, 0xe840c4c9, 0xccabd806, 0x14543f34, 0x1462417a, 0x0d4a1f9c, 0x087ed925, 0xd7f8f24c, 0x7338c425,
    0xcf86c8f5, 0xb19165cd, 0x9891c393, 0x325384ac, 0x0308459d, 0x86141d7e, 0xc922116a, 0xe2ffa6b6, 0x53f52aed,
    0x2cd86197, 0xf5b9f498, 0xbf319c8f, 0xe0411fae, 0x977eb18c, 0xd8770976, 0x9833466a, 0xc674df7f, 0x8c297d45,
    0x8ca48d26, 0xc49ed8e2, 0x7344f874, 0x556f79c7, 0x6b25eaed, 0xa03e2b42, 0xf68f66a4, 0x8e8b09a2, 0xf2e0e62a,
    0x0d3a9806, 0x9729e493, 0x8c72b0fc, 0x160b94f6, 0x450e4d3d, 0x7a320e85, 0xbef8f0e1, 0x21d73653, 0x4e3d977a,
    0x1e7b3929, 0x1cc6c719, 0xbe478d53, 0x8d752809, 0xe6d8c2c6, 0x275f0892, 0xc8acc273, 0x4cc21580, 0xecc4a617,
    0xf5f7be70, 0xe795248a, 0x375a2fe9, 0x425570b6, 0x8898dcf8, 0xdc2d97c4, 0x0106114b, 0x364dc22f, 0x1e0cad1f,
    0xbe63803c, 0x5f69fac2, 0x4d5afa6f, 0x1bc0dfb5, 0xfb273589, 0x0ea47f7b, 0x3c1c2b50, 0x21b2a932, 0x6b1223fd,
    0x2fe706a8, 0xf9bd6ce2, 0xa268e64e, 0xe987f486, 0x3eacf563, 0x1ca2018c, 0x65e18228, 0x2207360a, 0x57cf1715,
    0x34c37d2b, 0x1f8f3cde, 0x93b657cf, 0x31a019fd, 0xe69eb729, 0x8bca7b9b, 0x4c9d5bed, 0x277ebeaf, 0xe0d8f8ae,
    0xd150821c, 0x31381871, 0xafc3f1b0, 0x927db328, 0xe95effac, 0x305a47bd, 0x426ba35b, 0x1233af3f, 0x686a5b83,
    0x50e072e5, 0xd9d3bb2a, 0x8befc475, 0x487f0de6, 0xc88dff89, 0xbd664d5e, 0x971b5d18, 0x63b14847, 0xd7d3c1ce,
    0x7f583cf3, 0x72cbcb09, 0xc0d0a81c, 0x7fa3429b, 0xe9158a1b, 0x225ea19a, 0xd8ca9ea3, 0xc763b282, 0xbb0c6341,
    0x020b8293, 0xd4cd299d, 0x58cfa7f8, 0x91b4ee53, 0x37e4d140, 0x95ec764c, 0x30f76b06, 0x5ee68d24, 0x679c8661,
    0xa41979c2, 0xf2b61284, 0x4fac1475, 0x0adb49f9, 0x19727a23, 0x15a7e374, 0xc43a18d5, 0x3fb1aa73, 0x342fc615,
    0x924c0793, 0xbee2d7f0, 0x8a279de9, 0x4aa2d70c, 0xe24dd37f, 0xbe862c0b, 0x177c22c2, 0x5388e5ee, 0xcd8a7510,
    0xf901b4fd, 0xdbc13dbc, 0x6c0bae5b, 0x64efe8c7, 0x48b02079, 0x80331a49, 0xca3d8ae6, 0xf3546190, 0xfed7108b,
    0xc49b941b, 0x32baf4a9, 0xeb833a4a, 0x88a3f1a5, 0x3a91ce0a, 0x3cc27da1, 0x7112e684, 0x4a3096b1, 0x3794574c,
    0xa3c8b6f3, 0x1d213941, 0x6e0a2e00, 0x233479f1, 0x0f4cd82f, 0x6093edd2, 0x5d7d209e, 0x464fe319, 0xd4dcac9e,
    0x0db845cb, 0xfb5e4bc3, 0xe0256ce1, 0x09fb4ed1, 0x0914be1e, 0xa5bdb2c3, 0xc6eb57bb, 0x30320350, 0x3f397e91,
    0xa67791bc, 0x86bc0e2c, 0xefa0a7e2, 0xe9ff7543, 0xe733612c, 0xd185897b, 0x329e5388, 0x91dd236b, 0x2ecb0d93,
    0xf4d82a3d, 0x35b5c03f, 0xe4e606f0, 0x05b21843, 0x37b45964, 0x5eff22f4, 0x6027f4cc, 0x77178b3c, 0xae507131,
    0x7bf7cabc, 0xf9c18d66, 0x593ade65, 0xd95ddf11,
};

static inline uint32_t rotl1(uint32_t h) { return (h << 1) | (h >> 31); }


#ifdef HAVE_AVX512_KERNEL
/*
 * The AVX-512 (F, BW, VBMI) kernel: whole 64-byte blocks, all of them inside `data`.
 *
 * Table lookups: the table is split into four 256-byte planes (byte j of every entry); a 64-way
 * byte lookup into a plane is two 128-entry permutes (vpermi2b) and a blend on the index's top
 * bit. The outgoing byte of position p is the incoming byte of p - 64, i.e. the previous block,
 * so its lookups are reused. x_p = T[in_p] ^ T[out_p] is then regrouped from byte planes into
 * four vectors of 32-bit values in a strided layout: vector k, lane l holds x_(4l+k).
 *
 * The recurrence h_p = rotl(h_(p-1), 1) ^ x_p is linear, so with h0 the hash before the block:
 * - Q_k (per lane, no shuffles) = the hash of positions 4l..4l+k started from zero;
 * - S_l = XOR over m <= l of rotl(Q_3[m], 4(l - m)), a 4-step prefix scan across the lanes, is the
 *   hash at 4l+3 started from zero at the block start;
 * - the hash just before 4l is C_l = rotl(h0, 4l) ^ S_(l-1), and h_(4l+k) = rotl(C_l, k+1) ^ Q_k.
 * After the block h = rotl(h0, 64) ^ S_15 = h0 ^ S_15: the only dependency between blocks is one
 * xor, where the scalar loop has a rotate and an xor per byte.
 */
#define KERNEL_TARGET __attribute__((target("avx512f,avx512bw,avx512vbmi")))

static uint8_t planes[4][256] __attribute__((aligned(64)));
static uint8_t idx_words_a[64], idx_words_b[64], idx_dwords_c[64], idx_dwords_d[64];
static int32_t rot_by_4l[16];
/* 1 when the kernel may run (CPU and OS support it and no test turned it off). */
static int use_avx512 = 0;
static int have_avx512 = 0;

static void avx512_init(void) {
  for (int i = 0; i < 256; i++)
    for (int j = 0; j < 4; j++) planes[j][i] = (uint8_t)(TABLE[i] >> (8 * j));
  /* Bytes to words: from planes (0,1) or (2,3), vector a holds k = 0 then k = 1, vector b k = 2, 3. */
  for (int l = 0; l < 16; l++) {
    for (int kk = 0; kk < 2; kk++) {
      int w = 16 * kk + l;
      idx_words_a[2 * w] = (uint8_t)(4 * l + kk);
      idx_words_a[2 * w + 1] = (uint8_t)(64 + 4 * l + kk);
      idx_words_b[2 * w] = (uint8_t)(4 * l + 2 + kk);
      idx_words_b[2 * w + 1] = (uint8_t)(64 + 4 * l + 2 + kk);
    }
  }
  /* Words to dwords: low word from planes (0,1), high word from (2,3); c takes words 0..15, d 16..31. */
  for (int l = 0; l < 16; l++) {
    for (int b = 0; b < 2; b++) {
      idx_dwords_c[4 * l + b] = (uint8_t)(2 * l + b);
      idx_dwords_c[4 * l + 2 + b] = (uint8_t)(64 + 2 * l + b);
      idx_dwords_d[4 * l + b] = (uint8_t)(32 + 2 * l + b);
      idx_dwords_d[4 * l + 2 + b] = (uint8_t)(96 + 2 * l + b);
    }
    rot_by_4l[l] = 4 * l;
  }
  __builtin_cpu_init();
  have_avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vbmi");
  use_avx512 = have_avx512;
}

KERNEL_TARGET static inline __m512i plane_lookup(__m512i idx, __mmask64 top, const uint8_t *plane) {
  __m512i lo = _mm512_permutex2var_epi8(_mm512_load_si512(plane), idx, _mm512_load_si512(plane + 64));
  __m512i hi = _mm512_permutex2var_epi8(_mm512_load_si512(plane + 128), idx, _mm512_load_si512(plane + 192));
  return _mm512_mask_blend_epi8(top, lo, hi);
}

/*
 * Scans the blocks data[*pos..*pos+64), ... while they end by `end`; *pos >= 64 (the outgoing
 * bytes of the first block are data[*pos-64..*pos)). Returns the index just after the first
 * boundary, or -1 with *pos at the first unscanned byte and *h the hash there.
 */
KERNEL_TARGET static int64_t scan_avx512(const uint8_t *data, int64_t *pos_io, int64_t end, uint32_t *h_io,
                                         uint32_t mask, uint32_t threshold) {
  int64_t pos = *pos_io;
  const __m512i ia = _mm512_loadu_si512(idx_words_a), ib = _mm512_loadu_si512(idx_words_b);
  const __m512i ic = _mm512_loadu_si512(idx_dwords_c), id = _mm512_loadu_si512(idx_dwords_d);
  const __m512i rot4 = _mm512_loadu_si512(rot_by_4l);
  const __m512i vmask = _mm512_set1_epi32((int)mask), vthreshold = _mm512_set1_epi32((int)threshold);
  const __m512i lane15 = _mm512_set1_epi32(15);
  const __m512i zero = _mm512_setzero_si512();
  __m512i h0 = _mm512_set1_epi32((int)*h_io);

  __m512i prev = _mm512_loadu_si512(data + pos - 64);
  __mmask64 prev_top = _mm512_movepi8_mask(prev);
  __m512i o0 = plane_lookup(prev, prev_top, planes[0]), o1 = plane_lookup(prev, prev_top, planes[1]);
  __m512i o2 = plane_lookup(prev, prev_top, planes[2]), o3 = plane_lookup(prev, prev_top, planes[3]);
  for (; pos + 64 <= end; pos += 64) {
    __m512i in = _mm512_loadu_si512(data + pos);
    __mmask64 top = _mm512_movepi8_mask(in);
    __m512i i0 = plane_lookup(in, top, planes[0]), i1 = plane_lookup(in, top, planes[1]);
    __m512i i2 = plane_lookup(in, top, planes[2]), i3 = plane_lookup(in, top, planes[3]);
    __m512i x0 = _mm512_xor_si512(i0, o0), x1 = _mm512_xor_si512(i1, o1);
    __m512i x2 = _mm512_xor_si512(i2, o2), x3 = _mm512_xor_si512(i3, o3);
    o0 = i0, o1 = i1, o2 = i2, o3 = i3;
    __m512i w01a = _mm512_permutex2var_epi8(x0, ia, x1), w01b = _mm512_permutex2var_epi8(x0, ib, x1);
    __m512i w23a = _mm512_permutex2var_epi8(x2, ia, x3), w23b = _mm512_permutex2var_epi8(x2, ib, x3);
    __m512i q0 = _mm512_permutex2var_epi8(w01a, ic, w23a);
    __m512i q1 = _mm512_permutex2var_epi8(w01a, id, w23a);
    __m512i q2 = _mm512_permutex2var_epi8(w01b, ic, w23b);
    __m512i q3 = _mm512_permutex2var_epi8(w01b, id, w23b);
    q1 = _mm512_xor_si512(_mm512_rol_epi32(q0, 1), q1);
    q2 = _mm512_xor_si512(_mm512_rol_epi32(q1, 1), q2);
    q3 = _mm512_xor_si512(_mm512_rol_epi32(q2, 1), q3);
    __m512i s = q3;
    s = _mm512_xor_si512(s, _mm512_rol_epi32(_mm512_alignr_epi32(s, zero, 15), 4));
    s = _mm512_xor_si512(s, _mm512_rol_epi32(_mm512_alignr_epi32(s, zero, 14), 8));
    s = _mm512_xor_si512(s, _mm512_rol_epi32(_mm512_alignr_epi32(s, zero, 12), 16));
    s = _mm512_xor_si512(s, _mm512_alignr_epi32(s, zero, 8)); /* a rotation by 32 is the identity */
    __m512i c = _mm512_xor_si512(_mm512_rolv_epi32(h0, rot4), _mm512_alignr_epi32(s, zero, 15));
    __m512i m0 = _mm512_and_si512(_mm512_xor_si512(_mm512_rol_epi32(c, 1), q0), vmask);
    __m512i m1 = _mm512_and_si512(_mm512_xor_si512(_mm512_rol_epi32(c, 2), q1), vmask);
    __m512i m2 = _mm512_and_si512(_mm512_xor_si512(_mm512_rol_epi32(c, 3), q2), vmask);
    __m512i m3 = _mm512_and_si512(_mm512_xor_si512(_mm512_rol_epi32(c, 4), q3), vmask);
    __m512i most = _mm512_max_epu32(_mm512_max_epu32(m0, m1), _mm512_max_epu32(m2, m3));
    if (__builtin_expect(_mm512_cmpge_epu32_mask(most, vthreshold) != 0, 0)) {
      unsigned hits[4] = {_mm512_cmpge_epu32_mask(m0, vthreshold), _mm512_cmpge_epu32_mask(m1, vthreshold),
                          _mm512_cmpge_epu32_mask(m2, vthreshold), _mm512_cmpge_epu32_mask(m3, vthreshold)};
      int first = 64;
      for (int k = 0; k < 4; k++) {
        if (hits[k] != 0) {
          int p = 4 * __builtin_ctz(hits[k]) + k;
          if (p < first) first = p;
        }
      }
      return pos + first + 1;
    }
    h0 = _mm512_xor_si512(h0, _mm512_permutexvar_epi32(lane15, s));
  }
  *h_io = (uint32_t)_mm_cvtsi128_si32(_mm512_castsi512_si128(h0));
  *pos_io = pos;
  return -1;
}
#else
static void avx512_init(void) {}
#endif

typedef struct {
  uint32_t h;
  int64_t len;
  int64_t min, max;
  uint32_t mask, threshold;
  uint8_t *ring;
} scan_state;

/* No boundary in data[from..n): keep the hash, the length and the window's last bytes. */
static int64_t suspend(int32_t *st, const scan_state *s, const uint8_t *data, int64_t from, int64_t n, int64_t len,
                       uint32_t h) {
  int64_t tail = n - from > WINDOW ? n - WINDOW : from;
  int64_t p = len - (n - tail);
  for (int64_t i = tail; i < n; i++, p++) s->ring[p & (WINDOW - 1)] = data[i];
  st[0] = (int32_t)h;
  st[1] = (int32_t)len;
  return -1;
}

static int64_t cut(int32_t *st, int64_t at) {
  st[0] = 0;
  st[1] = 0;
  return at;
}

/*
 * Mirrors Chunker.scan in buzhash.ts step by step; see there for why the first min - 64 bytes of
 * a chunk are skipped unhashed. Needs min > 64 (PBS's smallest min is 16 KiB): the boundary test
 * at len == min below is only right when byte `min` lies past the window-fill phase.
 */
static int64_t scan(int32_t *st, const uint8_t *data, int64_t start, int64_t n) {
  scan_state s = {(uint32_t)st[0], st[1], st[2], st[3], (uint32_t)st[4], (uint32_t)st[5], (uint8_t *)st + RING_OFFSET};
  const int64_t hash_start = s.min - WINDOW;
  int64_t len = s.len;
  uint32_t h = s.h;
  int64_t pos = start;

  if (len < hash_start) {
    int64_t skip = hash_start - len < n - pos ? hash_start - len : n - pos;
    pos += skip;
    len += skip;
    if (len < hash_start) return suspend(st, &s, data, start, n, len, 0);
    h = 0;
  }

  if (len < s.min) {
    int64_t take = s.min - len < n - pos ? s.min - len : n - pos;
    int64_t fill_end = pos + take;
    for (; pos < fill_end; pos++) h = rotl1(h) ^ TABLE[data[pos]];
    len += take;
    if (len < s.min) return suspend(st, &s, data, start, n, len, h);
    if ((h & s.mask) >= s.threshold) return cut(st, pos);
  }

  const uint32_t mask = s.mask, threshold = s.threshold;
  int64_t end = n - pos < s.max - len ? n : pos + (s.max - len);
  /* Outgoing bytes that belong to earlier calls come from the ring. */
  int64_t ring_end = end < start + WINDOW ? end : start + WINDOW;
  for (; pos < ring_end; pos++) {
    h = rotl1(h) ^ TABLE[s.ring[len & (WINDOW - 1)]] ^ TABLE[data[pos]];
    len++;
    if ((h & mask) >= threshold) return cut(st, pos + 1);
  }
  int64_t hot_start = pos;
#ifdef HAVE_AVX512_KERNEL
  if (use_avx512 && end - pos >= 64) {
    int64_t at = scan_avx512(data, &pos, end, &h, mask, threshold);
    if (at >= 0) return cut(st, at);
  }
#endif
  for (; pos < end; pos++) {
    h = rotl1(h) ^ TABLE[data[pos - WINDOW]] ^ TABLE[data[pos]];
    if ((h & mask) >= threshold) return cut(st, pos + 1);
  }
  len += end - hot_start;
  if (len >= s.max) return cut(st, end);
  return suspend(st, &s, data, start, n, len, h);
}

static napi_value buzhash_scan(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  napi_typedarray_type type;
  size_t state_len;
  void *state_ptr;
  const uint8_t *data;
  size_t n;
  int64_t start;
  if (!burrow_get_args(env, info, 3, argv)) return NULL;
  if (napi_get_typedarray_info(env, argv[0], &type, &state_len, &state_ptr, NULL, NULL) != napi_ok ||
      type != napi_int32_array || state_len < STATE_INTS) {
    napi_throw_type_error(env, NULL, "buzhashScan: state must be an Int32Array of 24 elements");
    return NULL;
  }
  if (!burrow_get_bytes(env, argv[1], &data, &n) || !burrow_get_int64(env, argv[2], &start)) return NULL;
  int32_t *st = state_ptr;
  /* A corrupt state must not turn into reads outside `data`. */
  if (start < 0 || (uint64_t)start > n || st[2] <= WINDOW || st[3] < st[2] || st[1] < 0 || st[1] >= st[3]) {
    napi_throw_range_error(env, NULL, "buzhashScan: bad start or chunker state");
    return NULL;
  }
  return burrow_make_int64(env, scan(st, data, start, (int64_t)n));
}

static napi_value buzhash_kernel(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result;
  napi_valuetype type = napi_undefined;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc >= 1 && napi_typeof(env, argv[0], &type) != napi_ok) return NULL;
#ifdef HAVE_AVX512_KERNEL
  if (type == napi_boolean) {
    bool enable;
    if (napi_get_value_bool(env, argv[0], &enable) != napi_ok) return NULL;
    use_avx512 = enable && have_avx512;
  }
  const char *name = use_avx512 ? "avx512" : "scalar";
#else
  const char *name = "scalar";
#endif
  if (napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &result) != napi_ok) return NULL;
  return result;
}

napi_status burrow_register_buzhash(napi_env env, napi_value exports) {
  avx512_init();
  napi_property_descriptor props[] = {
      {"buzhashScan", NULL, buzhash_scan, NULL, NULL, NULL, napi_enumerable, NULL},
      {"buzhashKernel", NULL, buzhash_kernel, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
