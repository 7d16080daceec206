/* cli: the df11 program's commands and the small argument helpers they share. */
#ifndef APP_CLI_H
#define APP_CLI_H

#include <stdint.h>

/* Exit codes: 0 ok, 1 the work failed (bad input, I/O, checksum), 2 bad usage. */
#define CLI_EXIT_FAIL 1
#define CLI_EXIT_USAGE 2

typedef struct cli_common {
    int quiet, verbose;
} cli_common;

/* Each command takes argv after its name. */
int cmd_compress(int argc, char **argv, const cli_common *c);
int cmd_decompress(int argc, char **argv, const cli_common *c);
int cmd_verify(int argc, char **argv, const cli_common *c);
int cmd_inspect(int argc, char **argv, const cli_common *c);
int cmd_generate(int argc, char **argv, const cli_common *c);
int cmd_info(int argc, char **argv, const cli_common *c);
int cmd_batch(int argc, char **argv, const cli_common *c);
int cmd_regress(int argc, char **argv, const cli_common *c);
int cmd_window(int argc, char **argv, const cli_common *c);
/* the help texts of the commands that keep theirs beside them */
extern const char cli_help_regress[], cli_help_window[];
/* generate's help: its flags, the job's from the schema (pipeline/job.h) */
#include <stdio.h>
void gen_help(FILE *f);
/* batch's help: the keys of a line, from the schema */
void batch_help(FILE *f);

/* Decodes every compressed tensor of one file on the GPU and compares with the CPU decoder. */
#include "core/err.h"
err cli_verify_gpu_file(const char *path);

/* Matches "--name", "--name=V" or the short "-x" at argv[*i]; for options with a value, sets
 * *val (taking the next argument if needed, advancing *i). Returns 1 on a match, -1 when the
 * value is missing (message printed), 0 otherwise. */
int cli_opt(int argc, char **argv, int *i, const char *shrt, const char *lng, const char **val);
/* Parses a positive integer option value; prints an error and returns 0 on failure. */
int cli_int(const char *opt, const char *v, long lo, long hi, long *out);
/* Prints "df11: error: <msg>" for a failed library call; returns CLI_EXIT_FAIL. */
int cli_fail(void);
/* Prints a usage error with a hint; returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
