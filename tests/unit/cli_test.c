/* cli_test.c: the --config loader of cli.h (et_cli_args_load, et_cli_args_where).
 *
 * Each case writes a real file under a fresh temporary directory and loads it against a small
 * getopt_long table shaped like originctl's (a repeated flag, a flag without a value, the
 * action flags that may not come from a file). Negative cases check that the error names the
 * file and the right line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#include "et/cli.h"

static const struct option opts[] = {
    {"edge", required_argument, NULL, 'e'},   {"http", required_argument, NULL, 'H'},
    {"no-control", no_argument, NULL, 'N'},   {"data-conns", required_argument, NULL, 'd'},
    {"config", required_argument, NULL, 'C'}, {"print-config", no_argument, NULL, 'J'},
    {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
};

static et_cli_args args;
static char dir[64];
static char path[128];

static int dir_setup(void **state)
{
    snprintf(dir, sizeof(dir), "/tmp/et-cli-test.XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    snprintf(path, sizeof(path), "%s/test.conf", dir);
    return 0;
}

static int dir_teardown(void **state)
{
    unlink(path);
    return rmdir(dir);
}

/* write_conf writes |n| bytes of |text| as the config file. */
static void write_conf(const char *text, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* load runs et_cli_args_load on "prog --config PATH" plus |extra| (NULL-terminated). */
static int load(char *const *extra)
{
    static char *argv[16];
    int argc = 0;
    argv[argc++] = "prog";
    argv[argc++] = "--config";
    argv[argc++] = path;
    for (; extra != NULL && *extra != NULL && argc < 15; extra++)
        argv[argc++] = *extra;
    argv[argc] = NULL;
    return et_cli_args_load(&args, argc, argv, opts);
}

static void expect_error(const char *text, int err, const char *msg)
{
    write_conf(text, strlen(text));
    assert_int_equal(load(NULL), err);
    char want[256];
    snprintf(want, sizeof(want), "%s%s", path, msg);
    assert_string_equal(args.err, want);
}

static void test_file_then_flags(void **state)
{
    const char *text = "# a comment\n"
                       "; another\n"
                       "\n"
                       "edge = edge.example.com:7443\n"
                       "  http=a.example.com=http://127.0.0.1:1  \r\n"
                       "http = b.example.com=http://127.0.0.1:2;x#y\n"
                       "no-control = true\n"
                       "data-conns = 3"; /* no final newline */
    write_conf(text, strlen(text));
    char *extra[] = {"--data-conns", "5", "--http=c.example.com=1", NULL};
    assert_int_equal(load(extra), ET_OK);
    const char *want[] = {"prog",
                          "--edge=edge.example.com:7443",
                          "--http=a.example.com=http://127.0.0.1:1",
                          "--http=b.example.com=http://127.0.0.1:2;x#y",
                          "--no-control",
                          "--data-conns=3",
                          "--config",
                          path,
                          "--data-conns",
                          "5",
                          "--http=c.example.com=1"};
    assert_int_equal(args.argc, (int)(sizeof(want) / sizeof(want[0])));
    for (int i = 0; i < args.argc; i++)
        assert_string_equal(args.argv[i], want[i]);
    assert_null(args.argv[args.argc]);
    assert_int_equal(args.nfile, 5);
    assert_string_equal(args.path, path);
    assert_int_equal(optind, 0);

    /* where: a value from line 8 of the file, one from the command line */
    char want_where[160];
    snprintf(want_where, sizeof(want_where), "%s:8: ", path);
    assert_string_equal(et_cli_args_where(&args, args.argv[5] + strlen("--data-conns=")),
                        want_where);
    snprintf(want_where, sizeof(want_where), "%s:5: ", path);
    assert_string_equal(et_cli_args_where(&args, args.argv[2] + 7), want_where);
    assert_string_equal(et_cli_args_where(&args, args.argv[9]), "");
    assert_string_equal(et_cli_args_where(&args, NULL), "");
}

static void test_false_flag_and_empty_file(void **state)
{
    write_conf("no-control = false\n", 19);
    assert_int_equal(load(NULL), ET_OK);
    assert_int_equal(args.nfile, 0);
    assert_int_equal(args.argc, 3);
    write_conf("", 0);
    assert_int_equal(load(NULL), ET_OK);
    assert_int_equal(args.argc, 3);
}

static void test_no_config(void **state)
{
    char *argv[] = {"prog", "--edge", "x:1", NULL};
    assert_int_equal(et_cli_args_load(&args, 3, argv, opts), ET_OK);
    assert_int_equal(args.argc, 3);
    assert_null(args.path);
    assert_ptr_equal(args.argv[1], argv[1]);
    assert_null(args.argv[3]);
}

static void test_abbreviated_and_joined(void **state)
{
    write_conf("edge = e:1\n", 11);
    char joined[160];
    snprintf(joined, sizeof(joined), "--conf=%s", path);
    char *argv[] = {"prog", joined, NULL};
    assert_int_equal(et_cli_args_load(&args, 2, argv, opts), ET_OK);
    assert_int_equal(args.argc, 3);
    assert_string_equal(args.argv[1], "--edge=e:1");
    /* "--config" as the value of --edge is not a config file */
    char *argv2[] = {"prog", "--edge", "--config", NULL};
    assert_int_equal(et_cli_args_load(&args, 3, argv2, opts), ET_OK);
    assert_null(args.path);
}

static void test_errors(void **state)
{
    expect_error("edge = a:1\nbogus = 1\n", ET_E_CONFIG, ":2: unknown key 'bogus'");
    expect_error("\n\n\nconfig = /etc/x\n", ET_E_CONFIG, ":4: unknown key 'config'");
    expect_error("print-config = true\n", ET_E_CONFIG, ":1: unknown key 'print-config'");
    expect_error("help = true\n", ET_E_CONFIG, ":1: unknown key 'help'");
    expect_error("edg = a:1\n", ET_E_CONFIG, ":1: unknown key 'edg'"); /* no abbreviations */
    expect_error("--edge = a:1\n", ET_E_CONFIG, ":1: unknown key '--edge'");
    expect_error("edge = a:1\njust words\n", ET_E_CONFIG, ":2: expected key = value");
    expect_error("[edged]\nedge = a:1\n", ET_E_CONFIG, ":2: sections are not used ([edged])");
    expect_error("no-control = yes\n", ET_E_CONFIG,
                 ":1: no-control takes true or false, not 'yes'");
    expect_error("edge =\n", ET_E_CONFIG, ":1: no value for edge");
}

static void test_nul_byte_line(void **state)
{
    write_conf("edge = a:1\n\nhttp = x\0y\n", 23);
    assert_int_equal(load(NULL), ET_E_CONFIG);
    char want[160];
    snprintf(want, sizeof(want), "%s:3: NUL byte", path);
    assert_string_equal(args.err, want);
}

static void test_limits(void **state)
{
    static char big[ET_CLI_CONFIG_MAX + 2];
    /* a line of exactly ET_CLI_LINE_MAX bytes (newline included) is fine, one more is not */
    size_t n = (size_t)snprintf(big, sizeof(big), "edge = ");
    memset(big + n, 'a', ET_CLI_LINE_MAX - n - 1);
    big[ET_CLI_LINE_MAX - 1] = '\n';
    write_conf(big, ET_CLI_LINE_MAX);
    assert_int_equal(load(NULL), ET_OK);
    assert_int_equal(strlen(args.argv[1]), strlen("--edge=") + ET_CLI_LINE_MAX - n - 1);

    memset(big, '\n', 3);
    n = 3 + (size_t)snprintf(big + 3, sizeof(big) - 3, "edge = ");
    memset(big + n, 'a', ET_CLI_LINE_MAX + 1 - (n - 3));
    write_conf(big, 3 + ET_CLI_LINE_MAX + 1);
    assert_int_equal(load(NULL), ET_E_LIMIT);
    char want[200];
    snprintf(want, sizeof(want), "%s:4: line longer than %d bytes", path, ET_CLI_LINE_MAX);
    assert_string_equal(args.err, want);

    /* a file over the cap */
    memset(big, '#', sizeof(big));
    write_conf(big, ET_CLI_CONFIG_MAX + 1);
    assert_int_equal(load(NULL), ET_E_LIMIT);
    snprintf(want, sizeof(want), "%s: larger than %d bytes", path, ET_CLI_CONFIG_MAX);
    assert_string_equal(args.err, want);

    /* room for ET_CLI_ARGS_MAX - 1 settings and argv[0]: "no-control = true\n" is 18 bytes */
    size_t per = 18, count = ET_CLI_CONFIG_MAX / per;
    assert_true(count > ET_CLI_ARGS_MAX);
    for (size_t i = 0; i < count; i++)
        memcpy(big + i * per, "no-control = true\n", per);
    write_conf(big, count * per);
    assert_int_equal(load(NULL), ET_E_LIMIT);
    snprintf(want, sizeof(want), "%s:%d: too many settings", path, ET_CLI_ARGS_MAX);
    assert_string_equal(args.err, want);
}

static void test_file_errors(void **state)
{
    char *argv[] = {"prog", "--config", "/nonexistent/et.conf", NULL};
    assert_int_equal(et_cli_args_load(&args, 3, argv, opts), ET_E_IO);
    assert_string_equal(args.err, "/nonexistent/et.conf: No such file or directory");
    char *argv2[] = {"prog", "--config", dir, NULL};
    assert_int_equal(et_cli_args_load(&args, 3, argv2, opts), ET_E_CONFIG);
    char want[160];
    snprintf(want, sizeof(want), "%s: not a regular file", dir);
    assert_string_equal(args.err, want);
    write_conf("edge = a:1\n", 11);
    char *argv3[] = {"prog", "--config", path, "--config", path, NULL};
    assert_int_equal(et_cli_args_load(&args, 5, argv3, opts), ET_E_CONFIG);
    assert_string_equal(args.err, "--config given more than once");
}

/* --tcp-congestion: "system" is the host's default (empty), names are [a-z0-9_] that fit. */
static void test_congestion(void **state)
{
    (void)state;
    char cc[16];
    assert_int_equal(et_cli_congestion("bbr", cc, sizeof(cc)), ET_OK);
    assert_string_equal(cc, "bbr");
    assert_int_equal(et_cli_congestion("system", cc, sizeof(cc)), ET_OK);
    assert_string_equal(cc, "");
    assert_int_equal(et_cli_congestion("abcdefghijklmn_", cc, sizeof(cc)), ET_OK); /* 15 */
    assert_string_equal(cc, "abcdefghijklmn_");
    memcpy(cc, "unchanged", 10);
    const char *bad[] = {"", "BBR", "b b", "bbr;", "../x", "abcdefghijklmnop" /* 16 */};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(et_cli_congestion(bad[i], cc, sizeof(cc)), ET_E_CONFIG);
        assert_string_equal(cc, "unchanged");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_file_then_flags, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_false_flag_and_empty_file, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_no_config, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_abbreviated_and_joined, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_errors, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_nul_byte_line, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_limits, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_file_errors, dir_setup, dir_teardown),
        cmocka_unit_test(test_congestion),
    };
    return TU_RUN("cli", tests);
}
