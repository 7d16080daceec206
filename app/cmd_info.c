/* cmd_info: `df11 info FILE.png...`, the parameters a PNG carries back out of its text chunks:
 * the A1111-style "parameters" text (df11 generate writes it, as do A1111, Forge and others),
 * df11's own JSON ("df11" chunk), and any other text chunk, with the image's size.
 * Text mode prints them as they are; --json prints one JSON object a file (JSON Lines for
 * several files): {"file", "width", "height", "parameters", "df11": {...}, "texts": {...}}. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/cli.h"
#include "app/png.h"

/* One file's report; 0, or CLI_EXIT_FAIL (message printed) */
static int info_one(const char *path, int json) {
    png_text_list t = {0};
    uint8_t *rgb = NULL;
    int w = 0, h = 0;
    if (png_read_rgb(path, &rgb, &w, &h) || png_read_texts(path, &t)) {
        free(rgb);
        png_text_list_free(&t);
        return cli_fail();
    }
    free(rgb);
    const char *params = NULL, *ours = NULL;
    for (int i = 0; i < t.n; i++) {
        if (!params && !strcmp(t.keys[i], "parameters")) params = t.texts[i];
        if (!ours && !strcmp(t.keys[i], "df11")) ours = t.texts[i];
    }
    int rc = 0;
    if (!json) {
        printf("%s: %d x %d\n", path, w, h);
        for (int i = 0; i < t.n; i++)
            printf("%s:\n%s\n", t.keys[i], t.texts[i]);
    } else {
        cJSON *o = cJSON_CreateObject(), *texts = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "file", path);
        cJSON_AddNumberToObject(o, "width", w);
        cJSON_AddNumberToObject(o, "height", h);
        if (params) cJSON_AddStringToObject(o, "parameters", params);
        if (ours) {
            cJSON *js = cJSON_Parse(ours);
            if (js)
                cJSON_AddItemToObject(o, "df11", js);
            else
                fprintf(stderr, "df11: warning: %s: its \"df11\" text is not valid JSON\n", path);
        }
        for (int i = 0; i < t.n; i++)
            if (strcmp(t.keys[i], "parameters") && strcmp(t.keys[i], "df11"))
                cJSON_AddStringToObject(texts, t.keys[i], t.texts[i]);
        cJSON_AddItemToObject(o, "texts", texts);
        char *s = cJSON_PrintUnformatted(o);
        if (s) puts(s);
        free(s);
        cJSON_Delete(o);
    }
    if (!params && !ours) {
        fprintf(stderr,
                "df11: %s: no generation parameters (no \"parameters\" or \"df11\" text chunk)\n",
                path);
        rc = CLI_EXIT_FAIL;
    }
    png_text_list_free(&t);
    return rc;
}

int cmd_info(int argc, char **argv, const cli_common *c) {
    (void)c;
    int json = 0, nfiles = 0, rc = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (argv[i][0] == '-' && argv[i][1])
            return cli_usage_error("info", "unknown option \"%s\"", argv[i]);
        else
            nfiles++;
    }
    if (!nfiles) return cli_usage_error("info", "no PNG file given");
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) continue;
        const int r = info_one(argv[i], json);
        if (r) rc = r;
    }
    return rc;
}
