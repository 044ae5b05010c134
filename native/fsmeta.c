/*
 * The file metadata calls the pxar archiver and extractor need and Node lacks:
 *   lListXattr(path)                 -> Buffer (the raw NUL-separated name list) | errno
 *   lGetXattr(path, name)            -> Buffer | errno
 *   lSetXattr(path, name, value)     -> errno            (flags 0: create or replace)
 *   getFsFlags(fd) / getProjectId(fd) -> value >= 0 | -errno
 *   setFsFlags(fd, flags) / setProjectId(fd, projid) -> errno
 *   mknod(path, mode, major, minor)  -> errno
 *   setTimesNs(path, asec, ansec, msec, mnsec, follow) -> errno
 *   seekData(fd, offset) / seekHole(fd, offset) -> offset >= 0 | -errno (lseek SEEK_DATA/SEEK_HOLE)
 *   blockDeviceSize(fd)              -> bytes >= 0 | -errno (ioctl BLKGETSIZE64)
 * None of them follows a symlink unless asked (setTimesNs with follow = true): an archiver must
 * record and restore the link itself.
 */
#define _GNU_SOURCE
#include "burrow_native.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

/* Retries when the list or value grew between the size query and the read. */
#define XATTR_ATTEMPTS 8

static napi_value make_buffer(napi_env env, const void *data, size_t len) {
  napi_value result;
  void *copy;
  if (napi_create_buffer_copy(env, len, data, &copy, &result) != napi_ok) return NULL;
  return result;
}

/* Shared by list and get: `call(NULL, 0)` asks for the size, then the value is read. */
typedef ssize_t (*xattr_read_fn)(const char *path, const char *name, void *buf, size_t size);

static ssize_t list_adapter(const char *path, const char *name, void *buf, size_t size) {
  (void)name;
  return llistxattr(path, buf, size);
}

static ssize_t get_adapter(const char *path, const char *name, void *buf, size_t size) {
  return lgetxattr(path, name, buf, size);
}

static napi_value read_xattr_bytes(napi_env env, xattr_read_fn fn, const char *path, const char *name) {
  for (int attempt = 0; attempt < XATTR_ATTEMPTS; attempt++) {
    ssize_t size = fn(path, name, NULL, 0);
    if (size < 0) return burrow_make_int(env, errno);
    if (size == 0) return make_buffer(env, "", 0);
    char *buf = malloc((size_t)size);
    if (buf == NULL) return burrow_make_int(env, ENOMEM);
    ssize_t got = fn(path, name, buf, (size_t)size);
    if (got < 0) {
      int err = errno;
      free(buf);
      if (err == ERANGE) continue;
      return burrow_make_int(env, err);
    }
    napi_value result = make_buffer(env, buf, (size_t)got);
    free(buf);
    return result;
  }
  return burrow_make_int(env, ERANGE);
}

static napi_value l_list_xattr(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!burrow_get_args(env, info, 1, argv)) return NULL;
  char *path = burrow_get_path(env, argv[0]);
  if (path == NULL) return NULL;
  napi_value result = read_xattr_bytes(env, list_adapter, path, NULL);
  free(path);
  return result;
}

static napi_value l_get_xattr(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!burrow_get_args(env, info, 2, argv)) return NULL;
  char *path = burrow_get_path(env, argv[0]);
  if (path == NULL) return NULL;
  char *name = burrow_get_cstring(env, argv[1], "xattr name");
  if (name == NULL) {
    free(path);
    return NULL;
  }
  napi_value result = read_xattr_bytes(env, get_adapter, path, name);
  free(name);
  free(path);
  return result;
}

static napi_value l_set_xattr(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  const uint8_t *value;
  size_t len;
  if (!burrow_get_args(env, info, 3, argv) || !burrow_get_bytes(env, argv[2], &value, &len)) return NULL;
  char *path = burrow_get_path(env, argv[0]);
  if (path == NULL) return NULL;
  char *name = burrow_get_cstring(env, argv[1], "xattr name");
  if (name == NULL) {
    free(path);
    return NULL;
  }
  int rc = lsetxattr(path, name, value, len, 0);
  int err = rc < 0 ? errno : 0;
  free(name);
  free(path);
  return burrow_make_int(env, err);
}

/* The kernel reads and writes an int for these two, whatever the ioctl number's type says. */
static napi_value get_fs_flags(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd, flags = 0;
  if (!burrow_get_args(env, info, 1, argv) || !burrow_get_fd(env, argv[0], &fd)) return NULL;
  if (ioctl(fd, FS_IOC_GETFLAGS, &flags) < 0) return burrow_make_int64(env, -(int64_t)errno);
  return burrow_make_int64(env, (int64_t)(uint32_t)flags);
}

static napi_value set_fs_flags(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  uint32_t value;
  if (!burrow_get_args(env, info, 2, argv) || !burrow_get_fd(env, argv[0], &fd) ||
      !burrow_get_uint32(env, argv[1], &value))
    return NULL;
  int flags = (int)value;
  return burrow_make_int(env, ioctl(fd, FS_IOC_SETFLAGS, &flags) < 0 ? errno : 0);
}

static napi_value get_project_id(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  struct fsxattr fsx;
  if (!burrow_get_args(env, info, 1, argv) || !burrow_get_fd(env, argv[0], &fd)) return NULL;
  memset(&fsx, 0, sizeof fsx);
  if (ioctl(fd, FS_IOC_FSGETXATTR, &fsx) < 0) return burrow_make_int64(env, -(int64_t)errno);
  return burrow_make_int64(env, (int64_t)fsx.fsx_projid);
}

/* Read-modify-write, so the extent size hints and xflags stay as they are. */
static napi_value set_project_id(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  uint32_t projid;
  struct fsxattr fsx;
  if (!burrow_get_args(env, info, 2, argv) || !burrow_get_fd(env, argv[0], &fd) ||
      !burrow_get_uint32(env, argv[1], &projid))
    return NULL;
  memset(&fsx, 0, sizeof fsx);
  if (ioctl(fd, FS_IOC_FSGETXATTR, &fsx) < 0) return burrow_make_int(env, errno);
  fsx.fsx_projid = projid;
  return burrow_make_int(env, ioctl(fd, FS_IOC_FSSETXATTR, &fsx) < 0 ? errno : 0);
}

static napi_value do_mknod(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  uint32_t mode, major_no, minor_no;
  if (!burrow_get_args(env, info, 4, argv) || !burrow_get_uint32(env, argv[1], &mode) ||
      !burrow_get_uint32(env, argv[2], &major_no) || !burrow_get_uint32(env, argv[3], &minor_no))
    return NULL;
  char *path = burrow_get_path(env, argv[0]);
  if (path == NULL) return NULL;
  int rc;
  do {
    rc = mknod(path, (mode_t)mode, makedev(major_no, minor_no));
  } while (rc < 0 && errno == EINTR);
  int err = rc < 0 ? errno : 0;
  free(path);
  return burrow_make_int(env, err);
}

static napi_value set_times_ns(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  int64_t asec, msec;
  int ansec, mnsec;
  bool follow = false;
  if (!burrow_get_args(env, info, 6, argv) || !burrow_get_int64(env, argv[1], &asec) ||
      !burrow_get_int(env, argv[2], &ansec) || !burrow_get_int64(env, argv[3], &msec) ||
      !burrow_get_int(env, argv[4], &mnsec))
    return NULL;
  if (napi_get_value_bool(env, argv[5], &follow) != napi_ok) {
    napi_throw_type_error(env, NULL, "burrow_fs: follow must be a boolean");
    return NULL;
  }
  char *path = burrow_get_path(env, argv[0]);
  if (path == NULL) return NULL;
  struct timespec times[2];
  times[0].tv_sec = (time_t)asec;
  times[0].tv_nsec = ansec;
  times[1].tv_sec = (time_t)msec;
  times[1].tv_nsec = mnsec;
  int rc;
  do {
    rc = utimensat(AT_FDCWD, path, times, follow ? 0 : AT_SYMLINK_NOFOLLOW);
  } while (rc < 0 && errno == EINTR);
  int err = rc < 0 ? errno : 0;
  free(path);
  return burrow_make_int(env, err);
}

/*
 * Sparse files: where the next data region or hole starts, so an image reader skips holes
 * without reading zeros. lseek moves the fd's file position; callers use positional reads.
 */
static napi_value seek_whence(napi_env env, napi_callback_info info, int whence) {
  napi_value argv[2];
  int fd;
  int64_t offset;
  if (!burrow_get_args(env, info, 2, argv) || !burrow_get_fd(env, argv[0], &fd) ||
      !burrow_get_int64(env, argv[1], &offset))
    return NULL;
  if (offset < 0) return burrow_make_int64(env, -(int64_t)EINVAL);
  off_t rc = lseek(fd, (off_t)offset, whence);
  if (rc < 0) return burrow_make_int64(env, -(int64_t)errno);
  return burrow_make_int64(env, (int64_t)rc);
}

static napi_value seek_data(napi_env env, napi_callback_info info) {
  return seek_whence(env, info, SEEK_DATA);
}

static napi_value seek_hole(napi_env env, napi_callback_info info) {
  return seek_whence(env, info, SEEK_HOLE);
}

/* fstat reports size 0 for block devices; the kernel knows the real one. */
static napi_value block_device_size(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  uint64_t size = 0;
  if (!burrow_get_args(env, info, 1, argv) || !burrow_get_fd(env, argv[0], &fd)) return NULL;
  if (ioctl(fd, BLKGETSIZE64, &size) < 0) return burrow_make_int64(env, -(int64_t)errno);
  if (size > (uint64_t)INT64_MAX) return burrow_make_int64(env, -(int64_t)EOVERFLOW);
  return burrow_make_int64(env, (int64_t)size);
}

napi_status burrow_register_fsmeta(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"lListXattr", NULL, l_list_xattr, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lGetXattr", NULL, l_get_xattr, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lSetXattr", NULL, l_set_xattr, NULL, NULL, NULL, napi_enumerable, NULL},
      {"getFsFlags", NULL, get_fs_flags, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setFsFlags", NULL, set_fs_flags, NULL, NULL, NULL, napi_enumerable, NULL},
      {"getProjectId", NULL, get_project_id, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setProjectId", NULL, set_project_id, NULL, NULL, NULL, napi_enumerable, NULL},
      {"mknod", NULL, do_mknod, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setTimesNs", NULL, set_times_ns, NULL, NULL, NULL, napi_enumerable, NULL},
      {"seekData", NULL, seek_data, NULL, NULL, NULL, napi_enumerable, NULL},
      {"seekHole", NULL, seek_hole, NULL, NULL, NULL, napi_enumerable, NULL},
      {"blockDeviceSize", NULL, block_device_size, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
