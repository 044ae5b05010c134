{
  "targets": [
    {
      "target_name": "burrow_fs",
      "sources": ["native/burrow_fs.c", "native/fsmeta.c", "native/buzhash.c", "native/pxarhash.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    }
  ]
}
