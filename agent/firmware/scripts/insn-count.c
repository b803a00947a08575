/*
 * A QEMU TCG plugin (plugin API version 1, as in QEMU 7.2) that counts the guest
 * instructions executed between two marker functions, bench_start and bench_end, and
 * writes one line "instructions N" per region.
 *
 * Build: gcc -O2 -shared -fPIC -o libinsn-count.so insn-count.c
 * Use:   qemu-system-arm ... -plugin libinsn-count.so,start=ADDR,end=ADDR[,out=FILE]
 *        ADDR: the marker's address (its Thumb bit is ignored); FILE: where the lines
 *        go (default: QEMU's log, i.e. stderr).
 *
 * The rule is scripts/count-instructions.sh's: a region counts every instruction
 * executed after the first instruction of bench_start and before the first instruction
 * of bench_end (the rest of bench_start's body is counted, bench_end's is not).
 *
 * How: one inline 64-bit add per guest instruction, emitted before it (so the counter
 * is the number of instructions started), and a callback on the first instruction of
 * each marker that reads the counter. Both markers read it at the same point relative
 * to their own instruction, so end - start is the number of instructions from the
 * start marker's first instruction to the end marker's, one of the two included: the
 * trace script's figure plus one, which is subtracted.
 *
 * Debian's QEMU 7.2 installs no plugin header, so the few entry points used are
 * declared here from the documented plugin API.
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

typedef uint64_t plugin_id;
struct qemu_info_t; /* only passed through */
struct qemu_plugin_tb;
struct qemu_plugin_insn;

enum cb_flags { CB_NO_REGS = 0 };
enum inline_op { INLINE_ADD_U64 = 0 };

typedef void (*tb_trans_cb)(plugin_id id, struct qemu_plugin_tb *tb);
typedef void (*vcpu_udata_cb)(unsigned int vcpu_index, void *userdata);
typedef void (*udata_cb)(plugin_id id, void *userdata);

extern void qemu_plugin_register_vcpu_tb_trans_cb(plugin_id id, tb_trans_cb cb);
extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
extern struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
extern uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
extern void qemu_plugin_register_vcpu_insn_exec_inline(struct qemu_plugin_insn *insn, enum inline_op op,
                                                       void *ptr, uint64_t imm);
extern void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn, vcpu_udata_cb cb,
                                                   enum cb_flags flags, void *userdata);
extern void qemu_plugin_register_atexit_cb(plugin_id id, udata_cb cb, void *userdata);
extern void qemu_plugin_outs(const char *string);

EXPORT int qemu_plugin_version = 1;

static uint64_t executed;     /* instructions started so far (single vCPU) */
static uint64_t region_start; /* executed when the start marker ran */
static int in_region;
static uint64_t start_addr, end_addr;
static FILE *out;

static void report(const char *line)
{
    if (out) {
        fputs(line, out);
        fflush(out);
    } else {
        qemu_plugin_outs(line);
    }
}

static void at_start(unsigned int vcpu, void *data)
{
    (void)vcpu;
    (void)data;
    region_start = executed;
    in_region = 1;
}

static void at_end(unsigned int vcpu, void *data)
{
    char line[64];
    (void)vcpu;
    (void)data;
    if (!in_region)
        return;
    in_region = 0;
    snprintf(line, sizeof line, "instructions %" PRIu64 "\n", executed - region_start - 1);
    report(line);
}

static void translated(plugin_id id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    (void)id;
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint64_t pc = qemu_plugin_insn_vaddr(insn);
        qemu_plugin_register_vcpu_insn_exec_inline(insn, INLINE_ADD_U64, &executed, 1);
        if (pc == start_addr)
            qemu_plugin_register_vcpu_insn_exec_cb(insn, at_start, CB_NO_REGS, NULL);
        else if (pc == end_addr)
            qemu_plugin_register_vcpu_insn_exec_cb(insn, at_end, CB_NO_REGS, NULL);
    }
}

static void finished(plugin_id id, void *data)
{
    (void)id;
    (void)data;
    if (out)
        fclose(out);
    out = NULL;
}

static int address(const char *text, uint64_t *value)
{
    char *rest;
    unsigned long long v = strtoull(text, &rest, 0);
    if (*text == '\0' || *rest != '\0')
        return -1;
    *value = (uint64_t)v & ~(uint64_t)1;
    return 0;
}

EXPORT int qemu_plugin_install(plugin_id id, const struct qemu_info_t *info, int argc, char **argv)
{
    int have_start = 0, have_end = 0;
    (void)info;
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "start=", 6) == 0 && address(arg + 6, &start_addr) == 0) {
            have_start = 1;
        } else if (strncmp(arg, "end=", 4) == 0 && address(arg + 4, &end_addr) == 0) {
            have_end = 1;
        } else if (strncmp(arg, "out=", 4) == 0 && !out) {
            out = fopen(arg + 4, "w");
            if (!out) {
                fprintf(stderr, "insn-count: cannot open %s\n", arg + 4);
                return -1;
            }
        } else {
            fprintf(stderr, "insn-count: unknown or malformed argument %s\n", arg);
            return -1;
        }
    }
    if (!have_start || !have_end || start_addr == end_addr) {
        fprintf(stderr, "insn-count: needs start=ADDR,end=ADDR (two different addresses)\n");
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, translated);
    qemu_plugin_register_atexit_cb(id, finished, NULL);
    return 0;
}
