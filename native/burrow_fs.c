/*
 * burrow_fs: the few Linux file calls Node does not expose and Burrow needs to share a datastore
 * with Proxmox Backup Server (pbs-formats §2.4, §2.6, §6.7):
 *   fcntlSetLock(fd, kind)      POSIX record lock on the whole file, F_SETLK (never waits)
 *   flockNonBlocking(fd, kind)  flock(2) with LOCK_NB (never waits)
 *   touchAtime(path)            utimensat: atime = now, mtime untouched, symlinks not followed
 *   syncfs(fd)                  syncfs(2), on the calling thread
 *   syncfsAsync(fd, callback)   syncfs(2) on the libuv thread pool, callback(errno)
 *   copyBytes(dst, dstOffset, src, srcOffset, length)
 *                               memmove between Uint8Arrays; V8 copies into or out of shared
 *                               memory (SharedArrayBuffer) with relaxed atomics, byte by byte
 *                               when the two sides are not equally aligned (about 1.3 GB/s)
 * plus, in fsmeta.c, the metadata calls the pxar archiver and extractor need (xattrs, chattr
 * flags, project ids, mknod, utimensat with nanoseconds), in buzhash.c the chunker's scan loop, and
 * in pxarhash.c pxar's filename hash.
 *
 * Every function reports failure as a plain errno number (0 = done) or a boolean for "would
 * block", so all policy and all error objects live in TypeScript (src/lib/native-fs.ts). Nothing
 * here blocks the event loop for long: the lock calls are non-blocking and callers poll.
 *
 * Paths are strings (UTF-8) or Uint8Arrays of raw bytes, NUL-terminated here.
 */
#define _GNU_SOURCE
#include "burrow_native.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

napi_value burrow_make_int(napi_env env, int value) {
  napi_value result;
  if (napi_create_int32(env, value, &result) != napi_ok) return NULL;
  return result;
}

napi_value burrow_make_int64(napi_env env, int64_t value) {
  napi_value result;
  if (napi_create_int64(env, value, &result) != napi_ok) return NULL;
  return result;
}

int burrow_get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return 0;
  if (argc < want) {
    napi_throw_type_error(env, NULL, "burrow_fs: missing argument");
    return 0;
  }
  return 1;
}

int burrow_get_fd(napi_env env, napi_value value, int *fd) {
  if (napi_get_value_int32(env, value, fd) != napi_ok || *fd < 0) {
    napi_throw_type_error(env, NULL, "burrow_fs: fd must be a non-negative integer");
    return 0;
  }
  return 1;
}

int burrow_get_int(napi_env env, napi_value value, int *out) {
  if (napi_get_value_int32(env, value, out) != napi_ok) {
    napi_throw_type_error(env, NULL, "burrow_fs: expected an integer");
    return 0;
  }
  return 1;
}

int burrow_get_uint32(napi_env env, napi_value value, uint32_t *out) {
  if (napi_get_value_uint32(env, value, out) != napi_ok) {
    napi_throw_type_error(env, NULL, "burrow_fs: expected an unsigned integer");
    return 0;
  }
  return 1;
}

int burrow_get_int64(napi_env env, napi_value value, int64_t *out) {
  if (napi_get_value_int64(env, value, out) != napi_ok) {
    napi_throw_type_error(env, NULL, "burrow_fs: expected an integer");
    return 0;
  }
  return 1;
}

int burrow_get_bytes(napi_env env, napi_value value, const uint8_t **data, size_t *len) {
  bool is_typed = false;
  napi_typedarray_type type;
  void *ptr = NULL;
  if (napi_is_typedarray(env, value, &is_typed) != napi_ok || !is_typed ||
      napi_get_typedarray_info(env, value, &type, len, &ptr, NULL, NULL) != napi_ok || type != napi_uint8_array) {
    napi_throw_type_error(env, NULL, "burrow_fs: expected a Uint8Array or Buffer");
    return 0;
  }
  /* A zero-length view may carry no backing store at all. */
  static const uint8_t empty[1] = {0};
  *data = ptr != NULL ? ptr : empty;
  return 1;
}

static char *copy_cstring(napi_env env, const uint8_t *bytes, size_t len, const char *what) {
  if (memchr(bytes, 0, len) != NULL) {
    char msg[96];
    snprintf(msg, sizeof msg, "burrow_fs: %s contains a NUL byte", what);
    napi_throw_type_error(env, NULL, msg);
    return NULL;
  }
  char *buf = malloc(len + 1);
  if (buf == NULL) {
    napi_throw_error(env, NULL, "burrow_fs: out of memory");
    return NULL;
  }
  memcpy(buf, bytes, len);
  buf[len] = 0;
  return buf;
}

char *burrow_get_cstring(napi_env env, napi_value value, const char *what) {
  napi_valuetype vtype;
  if (napi_typeof(env, value, &vtype) != napi_ok) return NULL;
  if (vtype != napi_string) {
    const uint8_t *bytes;
    size_t len;
    if (!burrow_get_bytes(env, value, &bytes, &len)) return NULL;
    return copy_cstring(env, bytes, len, what);
  }
  size_t len = 0;
  if (napi_get_value_string_utf8(env, value, NULL, 0, &len) != napi_ok) return NULL;
  char *buf = malloc(len + 1);
  if (buf == NULL) {
    napi_throw_error(env, NULL, "burrow_fs: out of memory");
    return NULL;
  }
  if (napi_get_value_string_utf8(env, value, buf, len + 1, &len) != napi_ok) {
    free(buf);
    return NULL;
  }
  if (strlen(buf) != len) {
    char msg[96];
    snprintf(msg, sizeof msg, "burrow_fs: %s contains a NUL byte", what);
    free(buf);
    napi_throw_type_error(env, NULL, msg);
    return NULL;
  }
  return buf;
}

char *burrow_get_path(napi_env env, napi_value value) { return burrow_get_cstring(env, value, "path"); }

/*
 * fcntlSetLock(fd, type) -> errno; type 0 = F_RDLCK, 1 = F_WRLCK, 2 = F_UNLCK.
 * EACCES/EAGAIN mean "another process holds a conflicting lock"; TS turns them into false.
 */
static napi_value fcntl_set_lock(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd, type;
  if (!burrow_get_args(env, info, 2, argv) || !burrow_get_fd(env, argv[0], &fd) || !burrow_get_int(env, argv[1], &type)) return NULL;
  struct flock lock;
  memset(&lock, 0, sizeof lock);
  switch (type) {
    case 0: lock.l_type = F_RDLCK; break;
    case 1: lock.l_type = F_WRLCK; break;
    case 2: lock.l_type = F_UNLCK; break;
    default: napi_throw_range_error(env, NULL, "burrow_fs: bad fcntl lock type"); return NULL;
  }
  lock.l_whence = SEEK_SET;
  lock.l_start = 0;
  lock.l_len = 0; /* whole file, including bytes appended later */
  int rc;
  do {
    rc = fcntl(fd, F_SETLK, &lock);
  } while (rc < 0 && errno == EINTR);
  return burrow_make_int(env, rc < 0 ? errno : 0);
}

/* flockNonBlocking(fd, op) -> errno; op 0 = LOCK_SH, 1 = LOCK_EX, 2 = LOCK_UN. EWOULDBLOCK = held. */
static napi_value flock_non_blocking(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd, type, op;
  if (!burrow_get_args(env, info, 2, argv) || !burrow_get_fd(env, argv[0], &fd) || !burrow_get_int(env, argv[1], &type)) return NULL;
  switch (type) {
    case 0: op = LOCK_SH | LOCK_NB; break;
    case 1: op = LOCK_EX | LOCK_NB; break;
    case 2: op = LOCK_UN; break;
    default: napi_throw_range_error(env, NULL, "burrow_fs: bad flock operation"); return NULL;
  }
  int rc;
  do {
    rc = flock(fd, op);
  } while (rc < 0 && errno == EINTR);
  return burrow_make_int(env, rc < 0 ? errno : 0);
}

/* touchAtime(path) -> errno. The explicit UTIME_NOW sets atime whatever noatime/relatime say. */
static napi_value touch_atime(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!burrow_get_args(env, info, 1, argv)) return NULL;
  char *path = burrow_get_path(env, argv[0]);
  if (path == NULL) return NULL;
  struct timespec times[2];
  times[0].tv_sec = 0;
  times[0].tv_nsec = UTIME_NOW;
  times[1].tv_sec = 0;
  times[1].tv_nsec = UTIME_OMIT;
  int rc;
  do {
    rc = utimensat(AT_FDCWD, path, times, AT_SYMLINK_NOFOLLOW);
  } while (rc < 0 && errno == EINTR);
  int err = rc < 0 ? errno : 0;
  free(path);
  return burrow_make_int(env, err);
}

static int do_syncfs(int fd) {
  int rc;
  do {
    rc = syncfs(fd);
  } while (rc < 0 && errno == EINTR);
  return rc < 0 ? errno : 0;
}

/* syncfs(fd) -> errno, on the calling thread. */
static napi_value sync_fs(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!burrow_get_args(env, info, 1, argv) || !burrow_get_fd(env, argv[0], &fd)) return NULL;
  return burrow_make_int(env, do_syncfs(fd));
}

/* syncfsAsync(fd, callback): syncfs can take seconds on a busy disk, so run it off the event loop. */
typedef struct {
  napi_async_work work;
  napi_ref callback;
  int fd;
  int err;
} syncfs_job;

static void syncfs_execute(napi_env env, void *data) {
  (void)env;
  syncfs_job *job = data;
  job->err = do_syncfs(job->fd);
}

static void syncfs_complete(napi_env env, napi_status status, void *data) {
  syncfs_job *job = data;
  napi_value callback, global, arg;
  int err = status == napi_ok ? job->err : ECANCELED;
  if (napi_get_reference_value(env, job->callback, &callback) == napi_ok && callback != NULL &&
      napi_get_global(env, &global) == napi_ok && napi_create_int32(env, err, &arg) == napi_ok) {
    napi_call_function(env, global, callback, 1, &arg, NULL);
  }
  napi_delete_reference(env, job->callback);
  napi_delete_async_work(env, job->work);
  free(job);
}

static napi_value sync_fs_async(napi_env env, napi_callback_info info) {
  napi_value argv[2], name;
  int fd;
  napi_valuetype type;
  if (!burrow_get_args(env, info, 2, argv) || !burrow_get_fd(env, argv[0], &fd)) return NULL;
  CHECK(napi_typeof(env, argv[1], &type));
  if (type != napi_function) {
    napi_throw_type_error(env, NULL, "burrow_fs: callback must be a function");
    return NULL;
  }
  syncfs_job *job = calloc(1, sizeof *job);
  if (job == NULL) {
    napi_throw_error(env, NULL, "burrow_fs: out of memory");
    return NULL;
  }
  job->fd = fd;
  if (napi_create_reference(env, argv[1], 1, &job->callback) != napi_ok ||
      napi_create_string_utf8(env, "burrow_fs.syncfs", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, syncfs_execute, syncfs_complete, job, &job->work) != napi_ok) {
    if (job->callback != NULL) napi_delete_reference(env, job->callback);
    free(job);
    return NULL;
  }
  if (napi_queue_async_work(env, job->work) != napi_ok) {
    napi_delete_reference(env, job->callback);
    napi_delete_async_work(env, job->work);
    free(job);
    return NULL;
  }
  return NULL;
}

/*
 * copyBytes(dst, dstOffset, src, srcOffset, length): returns length. The caller owns the memory
 * model: Burrow copies into a shared chunk slot only while no other thread may read it.
 */
static napi_value copy_bytes(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  const uint8_t *dst, *src;
  size_t dst_len, src_len;
  int64_t dst_off, src_off, len;
  if (!burrow_get_args(env, info, 5, argv) || !burrow_get_bytes(env, argv[0], &dst, &dst_len) ||
      !burrow_get_int64(env, argv[1], &dst_off) || !burrow_get_bytes(env, argv[2], &src, &src_len) ||
      !burrow_get_int64(env, argv[3], &src_off) || !burrow_get_int64(env, argv[4], &len))
    return NULL;
  if (dst_off < 0 || src_off < 0 || len < 0 || (uint64_t)dst_off > dst_len || (uint64_t)len > dst_len - (uint64_t)dst_off ||
      (uint64_t)src_off > src_len || (uint64_t)len > src_len - (uint64_t)src_off) {
    napi_throw_range_error(env, NULL, "copyBytes: range outside an array");
    return NULL;
  }
  if (len > 0) memmove((uint8_t *)dst + dst_off, src + src_off, (size_t)len);
  return burrow_make_int64(env, len);
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"fcntlSetLock", NULL, fcntl_set_lock, NULL, NULL, NULL, napi_enumerable, NULL},
      {"flockNonBlocking", NULL, flock_non_blocking, NULL, NULL, NULL, napi_enumerable, NULL},
      {"touchAtime", NULL, touch_atime, NULL, NULL, NULL, napi_enumerable, NULL},
      {"syncfs", NULL, sync_fs, NULL, NULL, NULL, napi_enumerable, NULL},
      {"syncfsAsync", NULL, sync_fs_async, NULL, NULL, NULL, napi_enumerable, NULL},
      {"copyBytes", NULL, copy_bytes, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  CHECK(napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  CHECK(burrow_register_fsmeta(env, exports));
  CHECK(burrow_register_buzhash(env, exports));
  CHECK(burrow_register_pxarhash(env, exports));
  /* Let the TS side check it loaded the build it expects; bump with EXPECTED_ABI in native-fs.ts. */
  napi_value version = burrow_make_int(env, 5);
  if (version == NULL) return NULL;
  CHECK(napi_set_named_property(env, exports, "abiVersion", version));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
