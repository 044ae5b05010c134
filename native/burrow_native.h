/*
 * Helpers shared by the C files of the burrow_fs addon (defined in burrow_fs.c) and the
 * registration hooks of the other files. Every exported function reports failure as a plain errno
 * (or a negative errno where a value is returned), so all policy and all error objects live in
 * TypeScript (src/lib/native-fs.ts).
 */
#ifndef BURROW_NATIVE_H
#define BURROW_NATIVE_H

#ifndef NAPI_VERSION
#define NAPI_VERSION 8
#endif
#include <node_api.h>

#include <stddef.h>
#include <stdint.h>

#define CHECK(call)                                                                                                    \
  do {                                                                                                                 \
    if ((call) != napi_ok) return NULL;                                                                                \
  } while (0)

napi_value burrow_make_int(napi_env env, int value);
napi_value burrow_make_int64(napi_env env, int64_t value);
/* Fetches `want` arguments; 0 with a TypeError pending when fewer were passed. */
int burrow_get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv);
int burrow_get_fd(napi_env env, napi_value value, int *fd);
int burrow_get_int(napi_env env, napi_value value, int *out);
int burrow_get_uint32(napi_env env, napi_value value, uint32_t *out);
int burrow_get_int64(napi_env env, napi_value value, int64_t *out);
/* The bytes of a Uint8Array (Buffer included), not copied; 0 with a TypeError pending otherwise. */
int burrow_get_bytes(napi_env env, napi_value value, const uint8_t **data, size_t *len);
/*
 * A malloc'ed NUL-terminated copy of a path given as a string (UTF-8) or as a Uint8Array of raw
 * bytes (Linux names are bytes, not text). NULL with an exception pending on a bad type or an
 * embedded NUL, which would silently name a different file.
 */
char *burrow_get_path(napi_env env, napi_value value);
/* Same rules for a name that is not a path (an xattr name). */
char *burrow_get_cstring(napi_env env, napi_value value, const char *what);

/* Registration hooks of the other C files. */
napi_status burrow_register_fsmeta(napi_env env, napi_value exports);
napi_status burrow_register_buzhash(napi_env env, napi_value exports);
napi_status burrow_register_pxarhash(napi_env env, napi_value exports);

#endif
