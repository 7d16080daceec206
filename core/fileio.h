/* fileio: mapped input files, outputs written to a temporary name then renamed, and the few
 * path and folder operations the codec commands need. POSIX only. */
#ifndef CORE_FILEIO_H
#define CORE_FILEIO_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef struct fio_map {
    const uint8_t *data; /* read-only mapping (NULL for an empty file) */
    size_t size;
} fio_map;

/* Maps a whole file read-only. */
err fio_map_open(const char *path, fio_map *out);
void fio_map_close(fio_map *m); /* accepts a zeroed map */

/* An output file written at "<path>.tmp.<pid>" and renamed over path on commit; abort (or a
 * crash) leaves path untouched. */
typedef struct fio_out fio_out;

err fio_out_open(const char *path, fio_out **out);
err fio_out_write(fio_out *o, const void *data, size_t len);        /* appends */
err fio_out_pwrite(fio_out *o, const void *data, size_t len, uint64_t offset);
err fio_out_commit(fio_out *o); /* fsyncs, closes, renames; frees o */
void fio_out_abort(fio_out *o); /* closes, unlinks the temporary; frees o; accepts NULL */

/* Writes a whole file through fio_out. */
err fio_write_file(const char *path, const void *data, size_t len);
/* Copies a file's bytes (and permission bits) through fio_out. */
err fio_copy_file(const char *src, const char *dst);

int fio_exists(const char *path);
int fio_is_dir(const char *path);
/* Creates a folder and its parents (mode 0755); existing folders are fine. */
err fio_mkdirs(const char *path);
/* Removes a file or a folder tree; missing paths are fine. */
err fio_remove_tree(const char *path);
/* Lists regular files under dir recursively, as paths relative to dir, sorted bytewise.
 * *out is a malloc'd array of malloc'd strings; free with fio_list_free. */
err fio_list_files(const char *dir, char ***out, int *count);
void fio_list_free(char **list, int count);
/* 1 if a and b name the same file or folder (same device and inode), 0 otherwise. */
int fio_same_file(const char *a, const char *b);
/* 1 if path is inside dir (after resolving both), 0 otherwise. */
int fio_path_inside(const char *path, const char *dir);
/* "a/b" joined into buf of size n; ERR_ARG if it does not fit. */
err fio_join(char *buf, size_t n, const char *a, const char *b);
/* Does the name end with suffix? */
int fio_has_suffix(const char *name, const char *suffix);

#endif
