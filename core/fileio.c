/* fileio: mmap'd inputs, atomic outputs (temporary name + rename), folder walking. */
#include "core/fileio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

struct fio_out {
    int fd;
    char *path; /* final name */
    char *tmp;  /* "<path>.tmp.<pid>" */
};

err fio_map_open(const char *path, fio_map *out) {
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    FAIL_IF(fd < 0, ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        FAIL(ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        FAIL(ERR_IO, "%s: not a regular file", path);
    }
    if (st.st_size == 0) { /* mmap refuses length 0; an empty map is still a valid answer */
        close(fd);
        return ERR_OK;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd); /* the mapping keeps the file open */
    FAIL_IF(p == MAP_FAILED, ERR_IO, "%s: cannot mmap %lld bytes: %s", path, (long long)st.st_size,
            strerror(e));
    out->data = p;
    out->size = (size_t)st.st_size;
    return ERR_OK;
}

void fio_map_close(fio_map *m) {
    if (m->data) munmap((void *)m->data, m->size);
    m->data = NULL;
    m->size = 0;
}

static void out_free(fio_out *o) {
    free(o->path);
    free(o->tmp);
    free(o);
}

err fio_out_open(const char *path, fio_out **out) {
    *out = NULL;
    fio_out *o = calloc(1, sizeof *o);
    if (!o) FAIL(ERR_NOMEM, "%s: out of memory", path);
    size_t n = strlen(path) + 32;
    o->path = strdup(path);
    o->tmp = malloc(n);
    if (!o->path || !o->tmp) {
        out_free(o);
        FAIL(ERR_NOMEM, "%s: out of memory", path);
    }
    snprintf(o->tmp, n, "%s.tmp.%ld", path, (long)getpid());
    o->fd = open(o->tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
    if (o->fd < 0) {
        err e = err_set(ERR_IO, "%s: cannot create: %s", o->tmp, strerror(errno));
        out_free(o);
        return e;
    }
    *out = o;
    return ERR_OK;
}

err fio_out_write(fio_out *o, const void *data, size_t len) {
    const uint8_t *p = data;
    while (len > 0) {
        ssize_t k = write(o->fd, p, len);
        if (k < 0 && errno == EINTR) continue;
        FAIL_IF(k <= 0, ERR_IO, "%s: write failed: %s", o->tmp,
                k < 0 ? strerror(errno) : "no progress");
        p += k;
        len -= (size_t)k;
    }
    return ERR_OK;
}

err fio_out_pwrite(fio_out *o, const void *data, size_t len, uint64_t offset) {
    const uint8_t *p = data;
    FAIL_IF(offset > (uint64_t)INT64_MAX - len, ERR_ARG, "%s: write offset %llu too large", o->tmp,
            (unsigned long long)offset);
    while (len > 0) {
        ssize_t k = pwrite(o->fd, p, len, (off_t)offset);
        if (k < 0 && errno == EINTR) continue;
        FAIL_IF(k <= 0, ERR_IO, "%s: write at %llu failed: %s", o->tmp, (unsigned long long)offset,
                k < 0 ? strerror(errno) : "no progress");
        p += k;
        len -= (size_t)k;
        offset += (uint64_t)k;
    }
    return ERR_OK;
}

/* Without syncing the folder a crash after rename may still lose the new entry; failure here
 * is not worth failing the command over since the data itself is already synced. */
static void sync_parent(const char *path) {
    const char *slash = strrchr(path, '/');
    char dir[PATH_MAX];
    if (!slash) {
        strcpy(dir, ".");
    } else {
        size_t n = slash == path ? 1 : (size_t)(slash - path);
        if (n >= sizeof dir) return;
        memcpy(dir, path, n);
        dir[n] = 0;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    (void)fsync(fd);
    close(fd);
}

err fio_out_commit(fio_out *o) {
    err e = ERR_OK;
    if (fsync(o->fd) != 0) e = err_set(ERR_IO, "%s: fsync failed: %s", o->tmp, strerror(errno));
    if (close(o->fd) != 0 && e == ERR_OK)
        e = err_set(ERR_IO, "%s: close failed: %s", o->tmp, strerror(errno));
    if (e == ERR_OK && rename(o->tmp, o->path) != 0)
        e = err_set(ERR_IO, "%s: cannot rename to %s: %s", o->tmp, o->path, strerror(errno));
    if (e != ERR_OK)
        unlink(o->tmp);
    else
        sync_parent(o->path);
    out_free(o);
    return e;
}

void fio_out_abort(fio_out *o) {
    if (!o) return;
    close(o->fd);
    unlink(o->tmp);
    out_free(o);
}

err fio_write_file(const char *path, const void *data, size_t len) {
    fio_out *o;
    TRY(fio_out_open(path, &o));
    err e = fio_out_write(o, data, len);
    if (e != ERR_OK) {
        fio_out_abort(o);
        return e;
    }
    return fio_out_commit(o);
}

/* copy_file_range may refuse (other filesystem, old kernel) or stop early (procfs and the
 * like report 0); the read/write loop then finishes from wherever the offsets are. */
static err copy_fd(int in, fio_out *o, const char *src) {
    for (;;) {
        ssize_t k = copy_file_range(in, NULL, o->fd, NULL, (size_t)1 << 30, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
    }
    enum { BUF = 1 << 20 };
    uint8_t *buf = malloc(BUF);
    if (!buf) FAIL(ERR_NOMEM, "%s: out of memory", src);
    err e = ERR_OK;
    for (;;) {
        ssize_t k = read(in, buf, BUF);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) e = err_set(ERR_IO, "%s: read failed: %s", src, strerror(errno));
        if (k > 0) e = fio_out_write(o, buf, (size_t)k);
        if (k <= 0 || e != ERR_OK) break;
    }
    free(buf);
    return e;
}

err fio_copy_file(const char *src, const char *dst) {
    int in = open(src, O_RDONLY | O_CLOEXEC);
    FAIL_IF(in < 0, ERR_IO, "%s: cannot open: %s", src, strerror(errno));
    struct stat st;
    if (fstat(in, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(in);
        FAIL(ERR_IO, "%s: not a readable regular file", src);
    }
    fio_out *o;
    err e = fio_out_open(dst, &o);
    if (e != ERR_OK) {
        close(in);
        return e;
    }
    e = copy_fd(in, o, src);
    close(in);
    if (e == ERR_OK && fchmod(o->fd, st.st_mode & 07777) != 0)
        e = err_set(ERR_IO, "%s: cannot set permissions: %s", dst, strerror(errno));
    if (e != ERR_OK) {
        fio_out_abort(o);
        return e;
    }
    return fio_out_commit(o);
}

/* lstat: a dangling symlink is still a name that an output would replace. */
int fio_exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

int fio_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

err fio_mkdirs(const char *path) {
    char buf[PATH_MAX];
    size_t n = strlen(path);
    FAIL_IF(n == 0, ERR_ARG, "empty folder name");
    FAIL_IF(n >= sizeof buf, ERR_ARG, "%s: path too long", path);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != 0) continue;
        char c = buf[i];
        buf[i] = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            FAIL(ERR_IO, "%s: cannot create folder: %s", buf, strerror(errno));
        if (!fio_is_dir(buf)) FAIL(ERR_IO, "%s: exists and is not a folder", buf);
        buf[i] = c;
    }
    return ERR_OK;
}

/* Joins into a malloc'd string; NULL when out of memory. */
static char *join_alloc(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    char *s = malloc(na + nb + 2);
    if (!s) return NULL;
    memcpy(s, a, na);
    s[na] = '/';
    memcpy(s + na + 1, b, nb + 1);
    return s;
}

static int is_dot_name(const char *name) {
    return name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0));
}

static err remove_dir_contents(const char *dir) {
    DIR *d = opendir(dir);
    FAIL_IF(!d, ERR_IO, "%s: cannot open folder: %s", dir, strerror(errno));
    err e = ERR_OK;
    struct dirent *ent;
    while (e == ERR_OK && (ent = readdir(d)) != NULL) {
        if (is_dot_name(ent->d_name)) continue;
        char *child = join_alloc(dir, ent->d_name);
        e = child ? fio_remove_tree(child) : err_set(ERR_NOMEM, "%s: out of memory", dir);
        free(child);
    }
    closedir(d);
    return e;
}

err fio_remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT) return ERR_OK;
        FAIL(ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    }
    if (S_ISDIR(st.st_mode)) {
        TRY(remove_dir_contents(path));
        FAIL_IF(rmdir(path) != 0, ERR_IO, "%s: cannot remove folder: %s", path, strerror(errno));
        return ERR_OK;
    }
    FAIL_IF(unlink(path) != 0 && errno != ENOENT, ERR_IO, "%s: cannot remove: %s", path,
            strerror(errno));
    return ERR_OK;
}

typedef struct str_list {
    char **items;
    int count, cap;
} str_list;

static err list_push(str_list *l, char *s) {
    if (!s) FAIL(ERR_NOMEM, "out of memory listing files");
    if (l->count == l->cap) {
        int cap = l->cap ? l->cap * 2 : 64;
        char **p = realloc(l->items, (size_t)cap * sizeof *p);
        if (!p) {
            free(s);
            FAIL(ERR_NOMEM, "out of memory listing files");
        }
        l->items = p;
        l->cap = cap;
    }
    l->items[l->count++] = s;
    return ERR_OK;
}

/* rel is the folder relative to root ("" for root itself). Symlinked folders are not entered,
 * which keeps a link cycle from recursing forever. */
/* The folders on the path from the root to the one being listed, so a symlink cycle is seen. */
typedef struct dir_chain {
    dev_t dev;
    ino_t ino;
    const struct dir_chain *up;
} dir_chain;

static err list_dir(const char *root, const char *rel, str_list *l, const dir_chain *up) {
    char *abs = rel[0] ? join_alloc(root, rel) : strdup(root);
    if (!abs) FAIL(ERR_NOMEM, "out of memory listing files");
    DIR *d = opendir(abs);
    if (!d) {
        err e = err_set(ERR_IO, "%s: cannot open folder: %s", abs, strerror(errno));
        free(abs);
        return e;
    }
    err e = ERR_OK;
    struct dirent *ent;
    while (e == ERR_OK && (ent = readdir(d)) != NULL) {
        if (is_dot_name(ent->d_name)) continue;
        struct stat st;
        if (fstatat(dirfd(d), ent->d_name, &st, 0) != 0) continue; /* dangling link */
        char *child = rel[0] ? join_alloc(rel, ent->d_name) : strdup(ent->d_name);
        if (!child) {
            e = err_set(ERR_NOMEM, "out of memory listing files");
        } else if (S_ISREG(st.st_mode)) {
            e = list_push(l, child);
        } else {
            /* folders are followed through symlinks too (a pipeline folder may link the parts
               it shares with another), except into a folder of their own path (a cycle) */
            int cycle = 0;
            for (const dir_chain *a = up; a && !cycle; a = a->up)
                cycle = a->dev == st.st_dev && a->ino == st.st_ino;
            dir_chain here = {st.st_dev, st.st_ino, up};
            if (S_ISDIR(st.st_mode) && !cycle) e = list_dir(root, child, l, &here);
            free(child);
        }
    }
    closedir(d);
    free(abs);
    return e;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

err fio_list_files(const char *dir, char ***out, int *count) {
    *out = NULL;
    *count = 0;
    str_list l = {0};
    struct stat st;
    dir_chain top = {0, 0, NULL};
    if (stat(dir, &st) == 0) top.dev = st.st_dev, top.ino = st.st_ino;
    err e = list_dir(dir, "", &l, &top);
    if (e != ERR_OK) {
        fio_list_free(l.items, l.count);
        return e;
    }
    if (l.count > 1) qsort(l.items, (size_t)l.count, sizeof *l.items, cmp_str);
    *out = l.items;
    *count = l.count;
    return ERR_OK;
}

void fio_list_free(char **list, int count) {
    for (int i = 0; i < count; i++)
        free(list[i]);
    free(list);
}

int fio_same_file(const char *a, const char *b) {
    struct stat sa, sb;
    if (stat(a, &sa) != 0 || stat(b, &sb) != 0) return 0;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* Appends one component to an absolute resolved path; ".." and "." are lexical, which is
 * right only because everything appended lies below the deepest existing folder (no
 * symlinks to follow). */
static int append_component(char *buf, size_t n, const char *comp, size_t len) {
    if (len == 0 || (len == 1 && comp[0] == '.')) return 1;
    size_t bl = strlen(buf);
    if (len == 2 && comp[0] == '.' && comp[1] == '.') {
        char *slash = strrchr(buf, '/');
        if (slash == buf)
            buf[1] = 0;
        else if (slash)
            *slash = 0;
        return 1;
    }
    int need_slash = bl > 0 && buf[bl - 1] != '/';
    if (bl + (size_t)need_slash + len + 1 > n) return 0;
    if (need_slash) buf[bl++] = '/';
    memcpy(buf + bl, comp, len);
    buf[bl + len] = 0;
    return 1;
}

/* realpath for a path that may not exist yet: the deepest existing ancestor is resolved and
 * the rest appended. Returns 0 on failure. */
static int resolve_loose(const char *path, char out[PATH_MAX]) {
    if (realpath(path, out)) return 1;
    if (errno != ENOENT && errno != ENOTDIR) return 0;
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    size_t cut = n;
    while (cut > 0 && path[cut - 1] != '/')
        cut--;
    if (cut == n) return 0; /* nothing left to strip */
    char parent[PATH_MAX];
    if (cut == 0) {
        strcpy(parent, ".");
    } else {
        size_t pl = cut > 1 ? cut - 1 : 1; /* keep "/" for a root child */
        if (pl >= sizeof parent) return 0;
        memcpy(parent, path, pl);
        parent[pl] = 0;
    }
    if (!resolve_loose(parent, out)) return 0;
    return append_component(out, PATH_MAX, path + cut, n - cut);
}

int fio_path_inside(const char *path, const char *dir) {
    char rp[PATH_MAX], rd[PATH_MAX];
    if (!resolve_loose(path, rp) || !resolve_loose(dir, rd)) return 0;
    size_t nd = strlen(rd);
    if (nd == 1 && rd[0] == '/') return 1;
    return strncmp(rp, rd, nd) == 0 && (rp[nd] == 0 || rp[nd] == '/');
}

err fio_join(char *buf, size_t n, const char *a, const char *b) {
    size_t na = strlen(a);
    const char *sep = (na == 0 || a[na - 1] == '/') ? "" : "/";
    int k = snprintf(buf, n, "%s%s%s", a, sep, b);
    FAIL_IF(k < 0 || (size_t)k >= n, ERR_ARG, "path too long: %s%s%s", a, sep, b);
    return ERR_OK;
}

int fio_has_suffix(const char *name, const char *suffix) {
    size_t n = strlen(name), s = strlen(suffix);
    return n >= s && memcmp(name + n - s, suffix, s) == 0;
}
