/* arena: a bump allocator for many small allocations freed together (names, shapes, tables).
 * Blocks are malloc'd as needed; nothing is freed until arena_free. */
#ifndef CORE_ARENA_H
#define CORE_ARENA_H

#include <stddef.h>

typedef struct arena_block arena_block;
typedef struct arena {
    arena_block *head;
} arena;

/* Returns zeroed memory aligned to 16 bytes, or NULL when malloc fails. */
void *arena_alloc(arena *a, size_t size);
/* Copies a string (len bytes, NUL added) into the arena; NULL when malloc fails. */
char *arena_strndup(arena *a, const char *s, size_t len);
char *arena_strdup(arena *a, const char *s);
void arena_free(arena *a); /* releases every block; the arena can be reused */

#endif
