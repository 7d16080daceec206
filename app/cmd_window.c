/* cmd_window: `df11 window` (placeholder, being written) */
#include <stdio.h>

#include "app/cli.h"

const char cli_help_window[] = "usage: df11 window -m MODEL [generate's options]\n";

int cmd_window(int argc, char **argv, const cli_common *c) {
    (void)argc, (void)argv, (void)c;
    fprintf(stderr, "df11: window: not built yet\n");
    return CLI_EXIT_FAIL;
}
