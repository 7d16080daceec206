/* cmd_regress: `df11 regress DIR -m MODEL`, reference-image regression checks. Every PNG in DIR
 * that carries df11's parameters (or every line of a manifest naming a PNG in DIR) is rendered
 * again with the model given, through one pipeline session a backend,
 * and compared with the reference: the PNG's bytes by default (the same job writes the same
 * bytes), or its pixels within a tolerance (PSNR, largest difference) when asked. A table on
 * stdout, JUnit XML or JSON reports for CI systems, an .actual.png and a .diff.png for each
 * mismatch, and exit status 1 when anything differs. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/cli.h"
#include "app/generate.h"
#include "app/png.h"
#include "app/progress.h"
#include "core/log.h"
#include "unet_dit/sampler.h"

const char cli_help_regress[] =
    "usage: df11 regress DIR -m MODEL [options] [generate's model and backend options]\n"
    "Renders every PNG in DIR again from the parameters df11 wrote into it (its \"df11\" text\n"
    "chunk: prompt, seed, size, steps, guidance, noise, backend) and compares: the files' bytes\n"
    "by default, so any change to the pixels or the parameters is caught, or the pixels within\n"
    "a tolerance when --psnr or --max-diff is given. Each image runs on the backend it was made\n"
    "on (--cpu runs them all on the CPU). A reference made with another model (its weights'\n"
    "hash) is reported.\n"
    "      --manifest FILE  the jobs from FILE instead (df11 batch's JSON Lines; each line's\n"
    "                       \"output\" names its reference PNG in DIR)\n"
    "      --psnr DB        pass when the pixels' PSNR is at least DB\n"
    "      --max-diff N     pass when no channel differs by more than N (0..255)\n"
    "      --diff-dir D     where mismatches go (default DIR/regress-diff): NAME.actual.png,\n"
    "                       the new render, and NAME.diff.png, the reference dimmed with the\n"
    "                       differing pixels in red\n"
    "      --junit FILE     a JUnit XML report (one testcase an image; - for stdout)\n"
    "      --json FILE      a JSON report (one object an image; - for stdout)\n"
    "      --group N        images a model load (default 16)\n"
    "The table on stdout gives each image's result, largest difference, PSNR, differing\n"
    "pixels and seconds (its group's time over its images: the models load once a group).\n"
    "Exit status 0 when every image matches, 1 when any differs or cannot be checked, 2 on\n"
    "a usage error.\n";

typedef enum reg_status { REG_PASS, REG_DIFF, REG_ERROR } reg_status;

typedef struct reg_item {
    char ref[4096];   /* the reference PNG */
    const char *name; /* its file name, within ref */
    gen_line g;       /* the job */
    int has_job, cpu; /* cpu: it renders on the CPU backend */
    char want_hash[17], want_model[64], want_backend[8];
    pipeline_info info; /* as rendered */
    reg_status st;
    int done, compared, bytes_equal, max_diff, same_model; /* compared: the pixels */
    long long n_diff;
    double psnr, secs; /* secs: its group's time over the images the group rendered */
    char note[600];
} reg_item;

typedef struct reg_state {
    reg_item *it; /* the group's items */
    const char *diff_dir;
    double psnr_min;
    int max_diff, tolerance;
    progress_steps steps;
} reg_state;

static void item_error(reg_item *t, const char *fmt, const char *a) {
    t->st = REG_ERROR;
    snprintf(t->note, sizeof t->note, fmt, a);
}

/* ---- the jobs, from the PNGs' parameters ---- */

static const char *json_str(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The job df11's JSON describes, read through the job schema (every value checked as a flag's
 * would be); 0 with a note if it is not one. The model and backend it names are kept to
 * compare with. */
static int job_from_png(reg_item *t, const char *text, const gen_args *a) {
    cJSON *o = cJSON_Parse(text);
    int ok = cJSON_IsObject(o);
    for (const char *const *k = (const char *const[]){"prompt", "seed", "width", "height",
                                                      "steps", NULL};
         ok && *k; k++)
        ok = cJSON_GetObjectItemCaseSensitive(o, *k) != NULL;
    if (!ok) {
        cJSON_Delete(o);
        item_error(t, "%s: its df11 parameters lack the prompt, seed, size or steps", t->name);
        return 0;
    }
    err e = job_copy(&t->g.job, &a->job);
    if (!e) e = job_from_json(&t->g.job, o, text, t->name, NULL);
    if (e) {
        cJSON_Delete(o);
        item_error(t, "%s", err_msg());
        return 0;
    }
    const char *backend = json_str(o, "backend");
    snprintf(t->want_backend, sizeof t->want_backend, "%s", backend ? backend : "");
    t->cpu = a->opt.cpu || (backend && !strcmp(backend, "cpu"));
    snprintf(t->want_hash, sizeof t->want_hash, "%s", json_str(o, "model_hash") ?: "");
    snprintf(t->want_model, sizeof t->want_model, "%s", json_str(o, "model") ?: "");
    cJSON_Delete(o);
    return 1;
}

/* A PNG of DIR: its job from the df11 chunk, or an error item saying what it lacks */
static void item_from_png(reg_item *t, const gen_args *a) {
    png_text_list tl = {0};
    if (png_read_texts(t->ref, &tl)) {
        item_error(t, "%s", err_msg());
        return;
    }
    int k = 0, a1111 = 0;
    for (; k < tl.n && strcmp(tl.keys[k], "df11"); k++)
        a1111 |= !strcmp(tl.keys[k], "parameters");
    if (k == tl.n)
        item_error(t,
                   a1111 ? "%s: A1111 parameters but no df11 ones (give its job in a --manifest)"
                         : "%s: no parameters (not made by df11 generate or batch)",
                   t->name);
    else
        t->has_job = job_from_png(t, tl.texts[k], a);
    png_text_list_free(&tl);
}

static int by_ref(const void *a, const void *b) {
    return strcmp(((const reg_item *)a)->ref, ((const reg_item *)b)->ref);
}

/* The PNGs at DIR's top level, sorted by name; -1 if DIR cannot be read */
static int scan_dir(const char *dir, const gen_args *a, reg_item **out) {
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "df11: error: %s: %s\n", dir, strerror(errno));
        return -1;
    }
    reg_item *it = NULL;
    int n = 0, cap = 0;
    for (struct dirent *e; (e = readdir(d));) {
        const size_t ln = strlen(e->d_name);
        if (ln < 5 || strcmp(e->d_name + ln - 4, ".png") || e->d_name[0] == '.') continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            it = realloc(it, sizeof *it * (size_t)cap);
            CHECK(it);
        }
        memset(&it[n], 0, sizeof *it);
        snprintf(it[n].ref, sizeof it[n].ref, "%s/%s", dir, e->d_name);
        n++;
    }
    closedir(d);
    if (n) qsort(it, (size_t)n, sizeof *it, by_ref);
    for (int k = 0; k < n; k++) {
        it[k].name = strrchr(it[k].ref, '/') + 1;
        item_from_png(&it[k], a);
    }
    *out = it;
    return n;
}

/* The manifest's lines (df11 batch's format; "output" names the reference in DIR); -1 if it
 * cannot be read or a line is bad (reported by number) */
static int read_manifest(const char *file, const char *dir, const gen_args *a,
                         reg_item **out) {
    FILE *f = fopen(file, "r");
    if (!f) {
        fprintf(stderr, "df11: error: %s: %s\n", file, strerror(errno));
        return -1;
    }
    reg_item *it = NULL;
    int n = 0, cap = 0, bad = 0, line = 0;
    char *buf = NULL;
    size_t bn = 0;
    while (getline(&buf, &bn, f) >= 0) {
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            it = realloc(it, sizeof *it * (size_t)cap);
            CHECK(it);
        }
        reg_item *t = &it[n];
        memset(t, 0, sizeof *t);
        t->g.line = ++line;
        const int r = gen_line_parse(file, buf, &a->job, &t->g);
        t->cpu = a->opt.cpu;
        if (r < 0) bad++;
        if (r <= 0) continue;
        if (!t->g.output) {
            fprintf(stderr, "df11: %s:%d: no \"output\" naming the reference PNG in %s\n", file,
                    line, dir);
            gen_line_free(&t->g);
            bad++;
            continue;
        }
        const size_t ln = strlen(t->g.output);
        snprintf(t->ref, sizeof t->ref, "%s/%s%s", dir, t->g.output,
                 ln > 4 && !strcmp(t->g.output + ln - 4, ".png") ? "" : ".png");
        t->has_job = 1;
        if (access(t->ref, R_OK) != 0)
            item_error(t, "%.300s: no such reference image", t->g.output);
        n++;
    }
    free(buf);
    fclose(f);
    for (int k = 0; k < n; k++)
        it[k].name = strrchr(it[k].ref, '/') + 1;
    *out = it;
    if (bad) {
        fprintf(stderr, "df11: %s: %d bad lines\n", file, bad);
        for (int k = 0; k < n; k++)
            gen_line_free(&it[k].g);
        free(it);
        return -1;
    }
    return n;
}

/* ---- the comparison ---- */

/* 1 if the two files hold the same bytes */
static int same_bytes(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb;
    char x[65536], y[65536];
    while (same) {
        const size_t na = fread(x, 1, sizeof x, fa), nb = fread(y, 1, sizeof y, fb);
        same = na == nb && !memcmp(x, y, na);
        if (!na || !nb) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

/* The reference dimmed to a third, grey, with the differing pixels red (brighter for larger
 * differences) */
static err write_diff(const char *path, const uint8_t *ref, const uint8_t *got, int w, int h,
                      const reg_item *t) {
    uint8_t *d = malloc((size_t)w * (size_t)h * 3);
    FAIL_IF(!d, ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < (size_t)w * (size_t)h; i++) {
        const uint8_t *a = ref + 3 * i, *b = got + 3 * i;
        int m = 0;
        for (int c = 0; c < 3; c++)
            m = abs(a[c] - b[c]) > m ? abs(a[c] - b[c]) : m;
        const uint8_t g = (uint8_t)((a[0] * 77 + a[1] * 150 + a[2] * 29) >> 8) / 3;
        d[3 * i] = m ? (uint8_t)(m * 2 + 128 > 255 ? 255 : m * 2 + 128) : g;
        d[3 * i + 1] = m ? 0 : g;
        d[3 * i + 2] = m ? 0 : g;
    }
    char note[200];
    snprintf(note, sizeof note, "largest difference %d, %lld pixels differ, PSNR %.2f dB",
             t->max_diff, t->n_diff, t->psnr);
    const char *keys[] = {"Comment"}, *vals[] = {note};
    err e = png_write_rgb(path, d, w, h, keys, vals, 1);
    free(d);
    return e;
}

/* The new render against the reference: bytes, then pixels */
static void compare(reg_state *s, reg_item *t, const uint8_t *rgb, int w, int h,
                    const char *actual) {
    t->bytes_equal = same_bytes(actual, t->ref);
    uint8_t *ref = NULL;
    int rw = 0, rh = 0;
    if (png_read_rgb(t->ref, &ref, &rw, &rh)) {
        item_error(t, "%s", err_msg());
        return;
    }
    if (rw != w || rh != h) {
        t->st = REG_DIFF;
        snprintf(t->note, sizeof t->note, "rendered %dx%d, the reference is %dx%d", w, h, rw, rh);
        free(ref);
        return;
    }
    t->compared = 1;
    double se = 0;
    for (size_t i = 0; i < (size_t)w * (size_t)h; i++) {
        int m = 0;
        for (int c = 0; c < 3; c++) {
            const int dv = abs(rgb[3 * i + c] - ref[3 * i + c]);
            se += (double)dv * dv;
            m = dv > m ? dv : m;
        }
        t->n_diff += m > 0;
        t->max_diff = m > t->max_diff ? m : t->max_diff;
    }
    const double mse = se / ((double)w * h * 3);
    t->psnr = mse > 0 ? 10.0 * log10(255.0 * 255.0 / mse) : INFINITY;
    const int pass = s->tolerance ? (s->max_diff < 0 || t->max_diff <= s->max_diff) &&
                                        (s->psnr_min <= 0 || t->psnr >= s->psnr_min)
                                  : t->bytes_equal;
    t->st = pass ? REG_PASS : REG_DIFF;
    if (!pass && !t->n_diff)
        snprintf(t->note, sizeof t->note, "the same pixels, other bytes (the parameters differ)");
    if (!pass && t->n_diff) {
        char dp[4400];
        snprintf(dp, sizeof dp, "%s/%.*s.diff.png", s->diff_dir, (int)strlen(t->name) - 4, t->name);
        if (write_diff(dp, ref, rgb, w, h, t))
            item_error(t, "%s", err_msg());
        else
            snprintf(t->note, sizeof t->note, "%.400s", strrchr(dp, '/') + 1);
    }
    free(ref);
}

static void on_info(void *ctx, int job, const pipeline_info *in) {
    reg_state *s = ctx;
    reg_item *t = &s->it[job];
    t->info = *in;
    s->steps.total += (uint64_t)in->job.steps;
}

static void on_skip(void *ctx, int job, const char *msg) {
    reg_state *s = ctx;
    item_error(&s->it[job], "%s", msg);
}

static void on_step(void *ctx, int job, int image, int n_images, int step, int n_steps) {
    (void)image, (void)n_images;
    reg_state *s = ctx;
    char what[300];
    snprintf(what, sizeof what, "%s, step %d/%d", s->it[job].name, step, n_steps);
    progress_steps_add(&s->steps, what);
}

static err on_image(void *ctx, int job, int image, uint64_t seed, const uint8_t *rgb, int w,
                    int h) {
    (void)image;
    reg_state *s = ctx;
    reg_item *t = &s->it[job];
    char actual[4400];
    snprintf(actual, sizeof actual, "%s/%.*s.actual.png", s->diff_dir, (int)strlen(t->name) - 4,
             t->name);
    t->done = 1;
    t->same_model = !t->want_hash[0] || !strcmp(t->want_hash, t->info.model_hash);
    if (gen_write_png(actual, &t->info, seed, rgb, w, h)) {
        item_error(t, "%s", err_msg());
        return ERR_OK;
    }
    compare(s, t, rgb, w, h, actual);
    if (t->st == REG_PASS) unlink(actual);
    return ERR_OK;
}

/* ---- the reports ---- */

static const char *status_name(reg_status st) {
    return st == REG_PASS ? "ok" : st == REG_DIFF ? "DIFFERS" : "ERROR";
}

static void psnr_text(const reg_item *t, char *b, size_t n) {
    if (!t->compared)
        snprintf(b, n, "-");
    else if (isinf(t->psnr))
        snprintf(b, n, "inf");
    else
        snprintf(b, n, "%.2f", t->psnr);
}

/* The note a row shows: the mismatch's diff image or the error, and a model or backend that
 * is not the reference's */
static void row_note(const reg_item *t, char *b, size_t n) {
    int k = snprintf(b, n, "%s", t->note);
    if (t->done && !t->same_model && k >= 0 && (size_t)k < n)
        k += snprintf(b + k, n - (size_t)k, "%smodel %s (%s), the reference's %s (%s)",
                      k ? "; " : "", t->info.model_hash, t->info.model_name, t->want_hash,
                      t->want_model);
    if (t->done && t->want_backend[0] && strcmp(t->want_backend, t->info.backend) && k >= 0 &&
        (size_t)k < n)
        snprintf(b + k, n - (size_t)k, "%srendered on %s, the reference on %s", k ? "; " : "",
                 t->info.backend, t->want_backend);
}

static void print_table(FILE *f, const reg_item *it, int n) {
    int wn = 4;
    for (int k = 0; k < n; k++)
        wn = (int)strlen(it[k].name) > wn ? (int)strlen(it[k].name) : wn;
    fprintf(f, "%-*s  %-7s  %8s  %8s  %10s  %7s  %s\n", wn, "file", "result", "max diff", "PSNR dB",
            "pixels off", "s/image", "note");
    for (int k = 0; k < n; k++) {
        const reg_item *t = &it[k];
        char ps[32], note[1400], md[16] = "-", nd[24] = "-", sec[16] = "-";
        psnr_text(t, ps, sizeof ps);
        row_note(t, note, sizeof note);
        if (t->compared) {
            snprintf(md, sizeof md, "%d", t->max_diff);
            snprintf(nd, sizeof nd, "%lld", t->n_diff);
        }
        if (t->done) snprintf(sec, sizeof sec, "%.2f", t->secs);
        fprintf(f, "%-*s  %-7s  %8s  %8s  %10s  %7s  %s\n", wn, t->name, status_name(t->st), md, ps,
                nd, sec, note);
    }
}

static void xml_text(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '<')
            fputs("&lt;", f);
        else if (*s == '>')
            fputs("&gt;", f);
        else if (*s == '&')
            fputs("&amp;", f);
        else if (*s == '"')
            fputs("&quot;", f);
        else if ((unsigned char)*s >= 0x20 || *s == '\n' || *s == '\t')
            fputc(*s, f);
    }
}

/* Writes path ("-": stdout) through a temporary name and a rename; 0 (message printed) on
 * failure */
static int write_report(const char *path, const char *text) {
    if (!strcmp(path, "-")) return fputs(text, stdout) >= 0 && fflush(stdout) == 0;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    int ok = f && fputs(text, f) >= 0;
    if (f) ok = fclose(f) == 0 && ok;
    if (ok) ok = rename(tmp, path) == 0;
    if (!ok) {
        fprintf(stderr, "df11: error: %s: cannot write the report: %s\n", path, strerror(errno));
        unlink(tmp);
    }
    return ok;
}

static int junit(const char *path, const reg_item *it, int n, double secs) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CHECK(f);
    int fails = 0, errors = 0;
    for (int k = 0; k < n; k++)
        fails += it[k].st == REG_DIFF, errors += it[k].st == REG_ERROR;
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
    fprintf(f,
            "  <testsuite name=\"df11 regress\" tests=\"%d\" failures=\"%d\" errors=\"%d\" "
            "time=\"%.3f\">\n",
            n, fails, errors, secs);
    for (int k = 0; k < n; k++) {
        const reg_item *t = &it[k];
        char note[1400], ps[32], msg[1600];
        row_note(t, note, sizeof note);
        psnr_text(t, ps, sizeof ps);
        fprintf(f, "    <testcase classname=\"df11.regress\" name=\"");
        xml_text(f, t->name);
        fprintf(f, "\" time=\"%.3f\"", t->secs);
        if (t->st == REG_PASS) {
            fprintf(f, "/>\n");
            continue;
        }
        if (t->st == REG_DIFF && !t->compared)
            snprintf(msg, sizeof msg, "differs: %s", t->note);
        else if (t->st == REG_DIFF)
            snprintf(msg, sizeof msg, "differs: largest difference %d, %lld pixels, PSNR %s dB",
                     t->max_diff, t->n_diff, ps);
        else
            snprintf(msg, sizeof msg, "%s", t->note);
        fprintf(f, ">\n      <%s message=\"", t->st == REG_DIFF ? "failure" : "error");
        xml_text(f, msg);
        fprintf(f, "\">");
        xml_text(f, note);
        fprintf(f, "</%s>\n    </testcase>\n", t->st == REG_DIFF ? "failure" : "error");
    }
    fprintf(f, "  </testsuite>\n</testsuites>\n");
    fclose(f);
    const int ok = write_report(path, buf);
    free(buf);
    return ok;
}

static int json_report(const char *path, const reg_item *it, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int k = 0; k < n; k++) {
        const reg_item *t = &it[k];
        cJSON *o = cJSON_CreateObject();
        char note[1400];
        row_note(t, note, sizeof note);
        cJSON_AddStringToObject(o, "file", t->ref);
        cJSON_AddStringToObject(o, "result",
                                t->st == REG_PASS   ? "pass"
                                : t->st == REG_DIFF ? "differs"
                                                    : "error");
        if (t->done) cJSON_AddBoolToObject(o, "bytes_equal", t->bytes_equal);
        if (t->compared) {
            cJSON_AddNumberToObject(o, "max_diff", t->max_diff);
            cJSON_AddNumberToObject(o, "pixels_differing", (double)t->n_diff);
            if (isinf(t->psnr))
                cJSON_AddNullToObject(o, "psnr_db"); /* identical: infinite */
            else
                cJSON_AddNumberToObject(o, "psnr_db", t->psnr);
        }
        if (t->done) {
            cJSON_AddNumberToObject(o, "seconds", t->secs);
            cJSON_AddStringToObject(o, "model_hash", t->info.model_hash);
        }
        cJSON_AddStringToObject(o, "note", note);
        cJSON_AddItemToArray(a, o);
    }
    char *s = cJSON_Print(a);
    cJSON_Delete(a);
    CHECK(s);
    const size_t ln = strlen(s);
    char *t = realloc(s, ln + 2);
    CHECK(t);
    t[ln] = '\n', t[ln + 1] = 0;
    const int ok = write_report(path, t);
    free(t);
    return ok;
}

/* ---- the command ---- */

/* One group of items through a session: rendered, compared, timed. */
static void render_group(pipeline_session *ses, reg_state *s, reg_item *it, const int *idx,
                         int k) {
    pipeline_job *jobs = malloc(sizeof *jobs * (size_t)k);
    reg_item *grp = malloc(sizeof *grp * (size_t)k);
    CHECK(jobs && grp);
    for (int q = 0; q < k; q++)
        grp[q] = it[idx[q]], jobs[q] = grp[q].g.job;
    s->it = grp, s->steps.done = s->steps.total = 0;
    const double tg = progress_now();
    pipeline_callbacks cb = {
        .ctx = s, .on_step = on_step, .on_info = on_info, .on_skip = on_skip, .on_image = on_image};
    const err er = ses ? pipeline_run(ses, jobs, k, &cb) : ERR_ARG;
    progress_steps_close(&s->steps);
    /* its images go through each stage together: a group's time, shared among the images it
       rendered */
    int rendered = 0;
    for (int q = 0; q < k; q++)
        rendered += grp[q].done;
    for (int q = 0; q < k; q++) {
        if (grp[q].done) grp[q].secs = (progress_now() - tg) / rendered;
        if (er && !grp[q].done && grp[q].st != REG_ERROR) item_error(&grp[q], "%s", err_msg());
        it[idx[q]] = grp[q];
    }
    free(jobs);
    free(grp);
}

/* Every item that has a job: one session a backend (the models load once for all its
 * images where the residency policy keeps them), groups of `group` images. */
static void render_all(const gen_args *a, reg_state *s, reg_item *it, int n, long group) {
    int *idx = malloc(sizeof *idx * (size_t)(n + 1));
    CHECK(idx);
    for (int cpu = 0; cpu < 2; cpu++) {
        int m = 0;
        for (int k = 0; k < n; k++)
            if (it[k].has_job && it[k].st != REG_ERROR && it[k].cpu == cpu) idx[m++] = k;
        if (!m) continue;
        pipeline_options o = a->opt;
        o.cpu = cpu;
        pipeline_session *ses = NULL;
        if (pipeline_open(&a->paths, &o, &ses)) ses = NULL; /* each item says why */
        for (int g = 0; g < m; g += (int)group)
            render_group(ses, s, it, idx + g, m - g < group ? m - g : (int)group);
        pipeline_close(ses);
    }
    free(idx);
}

static int regress(int argc, char **argv, gen_args *a) {
    const char *dir = NULL, *manifest = NULL, *junit_path = NULL, *json_path = NULL;
    const char *diff_dir = NULL;
    long group = 16, max_diff = -1;
    double psnr = 0;
    for (int i = 0; i < argc; i++) {
        const char *v;
        int r;
        if ((r = cli_opt(argc, argv, &i, NULL, "--manifest", &v))) {
            if (r < 0) return CLI_EXIT_USAGE;
            manifest = v;
        } else if ((r = cli_opt(argc, argv, &i, NULL, "--junit", &v))) {
            if (r < 0) return CLI_EXIT_USAGE;
            junit_path = v;
        } else if ((r = cli_opt(argc, argv, &i, NULL, "--json", &v))) {
            if (r < 0) return CLI_EXIT_USAGE;
            json_path = v;
        } else if ((r = cli_opt(argc, argv, &i, NULL, "--diff-dir", &v))) {
            if (r < 0) return CLI_EXIT_USAGE;
            diff_dir = v;
        } else if ((r = cli_opt(argc, argv, &i, NULL, "--psnr", &v))) {
            if (r < 0 || !gen_parse_float("--psnr", v, 1, 200, &psnr)) return CLI_EXIT_USAGE;
        } else if ((r = cli_opt(argc, argv, &i, NULL, "--max-diff", &v))) {
            if (r < 0 || !cli_int("--max-diff", v, 0, 255, &max_diff)) return CLI_EXIT_USAGE;
        } else if ((r = cli_opt(argc, argv, &i, NULL, "--group", &v))) {
            if (r < 0 || !cli_int("--group", v, 1, 4096, &group)) return CLI_EXIT_USAGE;
        } else if ((r = gen_opt(argc, argv, &i, a))) {
            if (r < 0) return CLI_EXIT_USAGE;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return cli_usage_error("regress", "unknown option \"%s\"", argv[i]);
        } else if (dir) {
            return cli_usage_error("regress", "unexpected argument \"%s\"", argv[i]);
        } else {
            dir = argv[i];
        }
    }
    if (!dir) return cli_usage_error("regress", "no folder: df11 regress DIR -m MODEL");
    if (!gen_has_model("regress", a)) return CLI_EXIT_USAGE;
    if (a->job.prompt || a->out || a->job.batch_count != 1)
        return cli_usage_error("regress", "-p, -o and -b: the jobs come from the reference "
                                          "images (--diff-dir names where mismatches go)");
    char dd[4200];
    snprintf(dd, sizeof dd, "%s", diff_dir ? diff_dir : dir);
    if (!diff_dir) strncat(dd, "/regress-diff", sizeof dd - strlen(dd) - 1);

    reg_item *it = NULL;
    const int n = manifest ? read_manifest(manifest, dir, a, &it) : scan_dir(dir, a, &it);
    if (n < 0) return CLI_EXIT_FAIL;
    if (!n) {
        fprintf(stderr, "df11: regress: %s: no PNG to check%s\n", manifest ? manifest : dir,
                manifest ? "" : " (df11 generate or batch writes them)");
        free(it);
        return CLI_EXIT_FAIL;
    }
    struct stat st;
    const int made = stat(dd, &st) != 0;
    if (made && mkdir(dd, 0777) != 0) {
        fprintf(stderr, "df11: error: %s: cannot make the folder for mismatches: %s\n", dd,
                strerror(errno));
        free(it);
        return CLI_EXIT_FAIL;
    }

    int m = 0;
    for (int k = 0; k < n; k++)
        m += it[k].has_job && it[k].st != REG_ERROR;
    const double t0 = progress_now();
    reg_state s = {.diff_dir = dd,
                   .psnr_min = psnr,
                   .max_diff = (int)max_diff,
                   .tolerance = psnr > 0 || max_diff >= 0,
                   .steps = {.label = "regress", .quiet = a->quiet}};
    if (!a->quiet)
        fprintf(stderr, "df11: regress: %d images, %d to render (%s)\n", n, m,
                s.tolerance ? "pixels within the tolerance" : "exact bytes");
    render_all(a, &s, it, n, group);
    const double secs = progress_now() - t0;

    int pass = 0, diff = 0, error = 0;
    for (int k = 0; k < n; k++)
        pass += it[k].st == REG_PASS, diff += it[k].st == REG_DIFF, error += it[k].st == REG_ERROR;
    /* the table on stdout, unless a report goes there */
    FILE *tab = (junit_path && !strcmp(junit_path, "-")) || (json_path && !strcmp(json_path, "-"))
                    ? stderr
                    : stdout;
    print_table(tab, it, n);
    fprintf(tab, "%d images: %d match, %d differ, %d could not be checked (%.1f s)\n", n, pass,
            diff, error, secs);
    fflush(tab);
    int ok = 1;
    if (junit_path) ok &= junit(junit_path, it, n, secs);
    if (json_path) ok &= json_report(json_path, it, n);
    if (diff && !a->quiet) fprintf(stderr, "df11: regress: mismatches and their diffs in %s\n", dd);
    for (int k = 0; k < n; k++)
        gen_line_free(&it[k].g);
    free(it);
    if (made) rmdir(dd); /* when nothing differed */
    return pass == n && ok ? 0 : CLI_EXIT_FAIL;
}

int cmd_regress(int argc, char **argv, const cli_common *c) {
    gen_args a;
    gen_args_init(&a);
    a.quiet = c->quiet;
    const int rc = regress(argc, argv, &a);
    gen_args_free(&a);
    return rc;
}
