/* tree: the codec commands over what a user points them at: one .safetensors file, a sharded
 * checkpoint (its *.safetensors.index.json), or a whole model folder (every .safetensors file
 * converted, every other file copied). Outputs appear whole or not at all. */
#ifndef DF11_TREE_H
#define DF11_TREE_H

#include "df11/container.h"

typedef enum df11_op { DF11_OP_COMPRESS, DF11_OP_DECOMPRESS, DF11_OP_VERIFY } df11_op;

/* Converts in -> out (out is a file, an index path, or a folder, matching in). ERR_EXISTS if
 * out exists and !force; never writes into or over in. */
err df11_convert_path(df11_op op, const char *in, const char *out, const df11_params *p,
                      int force, const df11_progress *pr);
/* Verifies every DF11 file at path (a file, an index or a folder); ERR_ARG if none is DF11. */
err df11_verify_path(const char *path, const df11_progress *pr);
/* Lists the safetensors files that path names (a file: itself; an index: its shards; a
 * folder: every *.safetensors under it), malloc'd, for inspect. */
err df11_list_checkpoints(const char *path, char ***files, int *count);

#endif
