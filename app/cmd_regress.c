/* cmd_regress: `df11 regress` (placeholder, being written) */
#include <stdio.h>

#include "app/cli.h"

const char cli_help_regress[] = "usage: df11 regress DIR -m MODEL\n";

int cmd_regress(int argc, char **argv, const cli_common *c) {
    (void)argc, (void)argv, (void)c;
    fprintf(stderr, "df11: regress: not built yet\n");
    return CLI_EXIT_FAIL;
}
