/* safetensors_internal: helpers shared by the safetensors reader/writer (safetensors.c) and
 * the sharded-index reader (safetensors_index.c). Not part of the core API. */
#ifndef CORE_SAFETENSORS_INTERNAL_H
#define CORE_SAFETENSORS_INTERNAL_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* A name and its position, sorted by name for duplicate checks and binary search. */
typedef struct name_ix {
    const char *name;
    int idx;
} name_ix;

/* Sorts v; returns the index in v of the second of the first duplicate pair, or -1. */
int st_sort_find_dup(name_ix *v, int n);
/* The idx of name in sorted v, or -1. */
int st_lookup(const name_ix *v, int n, const char *name);
/* NULL if the n bytes at p are valid header text, else what is wrong (*at: where). */
const char *st_scan_header(const uint8_t *p, size_t n, size_t *at);
/* Parses n bytes of JSON (NUL-terminated copy; only whitespace may follow). */
err st_parse_json(const char *label, const char *what, const uint8_t *text, size_t n, cJSON **out);

#endif
