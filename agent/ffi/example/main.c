/*
 * agent-net-c: the networked example firmware in C, on the mota-agent C API
 * (libmota_agent_ffi.a, mota_agent.h). Same contract as the Rust agent-net
 * (agent/firmware/src/bin/agent_net.rs), so the same harness drives both.
 *
 * Board: QEMU mps2-an386 (Cortex-M4). UART0 carries the MQTT byte stream to the broker
 * (QEMU: -serial tcp:127.0.0.1:PORT,reconnect=1) and the bundled session (mota_session_*)
 * speaks MQTT over it. The flash part (state region 3 x 4 KiB, slots A and B of 32 KiB)
 * is a RAM mirror written through to a host file (semihosting) on every program and
 * erase, so killing QEMU is a power cut.
 *
 * Command line (semihosting): agent-net-c DEVICE_ID FLASH_FILE ROOT_PUBLIC_KEY_HEX
 * [MQTT_PASSWORD]. Lines on stdout:
 *   mota-device ID: boot running NAME VERSION SHA256   (or "boot running nothing")
 *   mota-device ID: connected
 *   mota-device ID: phase image|set|validate VERSION, then "phase idle"
 *   mota-device ID: running NAME VERSION SHA256       (whenever the active model changes)
 *   mota-device ID: reboot (REASON)                   (then a system reset)
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "board.h"
#include "mota_agent.h"

#define SECTOR 4096u
#define STATE_LEN (3u * SECTOR)
#define SLOT_LEN (32u * 1024u)
#define PART_LEN (STATE_LEN + 2u * SLOT_LEN)
#define CHUNK_BYTES 1024u
#define ARENA_BYTES (16u * 1024u)

/* The factory model, embedded by factory.S. */
extern const uint8_t factory_model[];
extern const uint32_t factory_model_size;

/* ---- The flash part: a RAM mirror the CPU reads, written through to a host file. ---- */

static uint8_t part[PART_LEN] __attribute__((aligned(8)));
static FILE *backing;
/* Where each mota_region starts in the part, and its size. */
static const uint32_t region_at[3] = {STATE_LEN, STATE_LEN + SLOT_LEN, 0};
static const uint32_t region_len[3] = {SLOT_LEN, SLOT_LEN, STATE_LEN};

/* Writes part[at, at + len) through to the file before the flash operation returns. */
static int persist(uint32_t at, uint32_t len) {
    if (fseek(backing, (long)at, SEEK_SET) != 0) return -1;
    if (fwrite(part + at, 1, len, backing) != len) return -1;
    return fflush(backing) == 0 ? 0 : -1;
}

/* The part as it leaves the factory: all erased, the factory model at slot A's start. */
static void fresh_part(void) {
    memset(part, 0xFF, sizeof part);
    memcpy(part + STATE_LEN, factory_model, factory_model_size);
}

/* Loads the part from `path`, or creates the file on the very first boot (missing or
   of another size). */
static int open_part(const char *path) {
    backing = fopen(path, "r+b");
    if (backing != NULL) {
        if (fseek(backing, 0, SEEK_END) == 0 && ftell(backing) == (long)PART_LEN &&
            fseek(backing, 0, SEEK_SET) == 0 && fread(part, 1, PART_LEN, backing) == PART_LEN) {
            setvbuf(backing, NULL, _IONBF, 0);
            return 0;
        }
        fclose(backing);
    }
    fresh_part();
    backing = fopen(path, "w+b");
    if (backing == NULL) return -1;
    setvbuf(backing, NULL, _IONBF, 0);
    return persist(0, PART_LEN);
}

/* The NOR rules the agent must live with; a request off them is refused (the library
   never makes one: it checks bounds and the grid first). */
static int in_region(uint8_t region, uint32_t offset, size_t len) {
    return region < 3 && offset <= region_len[region] && len <= region_len[region] - offset;
}

static int32_t flash_read(void *ctx, uint8_t region, uint32_t offset, uint8_t *buf, size_t len) {
    (void)ctx;
    if (!in_region(region, offset, len)) return -1;
    memcpy(buf, part + region_at[region] + offset, len);
    return 0;
}

static int32_t flash_write(void *ctx, uint8_t region, uint32_t offset, const uint8_t *data, size_t len) {
    (void)ctx;
    if (!in_region(region, offset, len)) return -1;
    if (offset % MOTA_FLASH_WRITE_SIZE != 0 || len % MOTA_FLASH_WRITE_SIZE != 0) return -2;
    uint8_t *p = part + region_at[region] + offset;
    for (size_t i = 0; i < len; i++) p[i] &= data[i]; /* programming only clears bits */
    return persist(region_at[region] + offset, (uint32_t)len);
}

static int32_t flash_erase(void *ctx, uint8_t region, uint32_t from, uint32_t to) {
    (void)ctx;
    if (from > to || !in_region(region, from, to - from)) return -1;
    if (from % SECTOR != 0 || to % SECTOR != 0) return -2;
    memset(part + region_at[region] + from, 0xFF, to - from);
    return persist(region_at[region] + from, to - from);
}

static uint64_t now_ms(void *ctx) {
    (void)ctx;
    return board_millis();
}

/* ---- UART0 as the MQTT byte stream. ---- */

static ptrdiff_t stream_read(void *ctx, uint8_t *buf, size_t len) {
    (void)ctx;
    return (ptrdiff_t)uart_read(buf, len);
}

static ptrdiff_t stream_write(void *ctx, const uint8_t *data, size_t len) {
    (void)ctx;
    uart_write(data, len);
    return (ptrdiff_t)len;
}

/* ---- The device. ---- */

static const char *device_id = "?";
static uint8_t root[32];
static uint8_t arena[ARENA_BYTES] __attribute__((aligned(16)));
static uint8_t session_buffer[MOTA_SESSION_BUFFER_BYTES(CHUNK_BYTES)] __attribute__((aligned(8)));

static mota_factory factory = {
    .size = 0, /* set in main: the embedded model's size */
    .name = "digits_cnn",
    .version = "1.0.0",
    .counter = 1,
    .arena_bytes = 2976,
};

static int parse_root(const char *hex) {
    if (strlen(hex) != 64) return -1;
    for (int i = 0; i < 32; i++) {
        unsigned byte;
        char pair[3] = {hex[2 * i], hex[2 * i + 1], 0};
        char *end;
        byte = (unsigned)strtoul(pair, &end, 16);
        if (*end != 0 || pair[0] == '+' || pair[0] == '-' || pair[0] == ' ') return -1;
        root[i] = (uint8_t)byte;
    }
    return 0;
}

static void halt(const char *why) {
    printf("agent-net-c: %s\n", why);
    fflush(stdout);
    exit(1);
}

/* The agent could not go on (its flash failed): reset, as a watchdog would. */
static void reboot(int32_t code) {
    char why[MOTA_ERROR_TEXT_BYTES];
    if (mota_agent_last_error(why, sizeof why) <= 0) {
        snprintf(why, sizeof why, "%s", mota_error_name(code));
    }
    printf("mota-device %s: reboot (%s)\n", device_id, why);
    fflush(stdout);
    board_reset();
}

static void announce(const char *what, int have, const mota_active_model *m) {
    if (!have) {
        printf("mota-device %s: %s nothing\n", device_id, what);
    } else {
        char hex[65];
        for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", m->sha256[i]);
        printf("mota-device %s: %s %s %s %s\n", device_id, what, m->name, m->version, hex);
    }
    fflush(stdout);
}

static const char *phase_name(uint8_t phase);

/* Prints the update's phase when it changed since *shown (0: no update). */
static void show_phase(uint8_t *shown) {
    mota_job job;
    uint8_t now = mota_agent_job(&job) == MOTA_OK ? job.phase : 0;
    if (now == *shown) return;
    *shown = now;
    if (now != 0) {
        printf("mota-device %s: phase %s %s\n", device_id, phase_name(now), job.version);
    } else {
        printf("mota-device %s: phase idle\n", device_id);
    }
    fflush(stdout);
}

static const char *phase_name(uint8_t phase) {
    switch (phase) {
        case MOTA_PHASE_IMAGE: return "image";
        case MOTA_PHASE_SET: return "set";
        case MOTA_PHASE_VALIDATE: return "validate";
        default: return "?";
    }
}

int main(int argc, char **argv) {
    if (argc < 4 || parse_root(argv[3]) != 0) {
        halt("usage: agent-net-c DEVICE_ID FLASH_FILE ROOT_PUBLIC_KEY_HEX [MQTT_PASSWORD]");
    }
    device_id = argv[1];
    const char *password = argc > 4 ? argv[4] : NULL;
    board_start_clock();
    uart_init();
    if (open_part(argv[2]) != 0) halt("cannot open the flash file");

    factory.size = factory_model_size;
    const mota_config config = {
        .device_id = device_id,
        .device_class = "cortex-m4",
        .agent_version = "c-example",
        .roots = (const uint8_t(*)[32])root,
        .roots_len = 1,
        .limits = {.max_image_bytes = SLOT_LEN,
                   .max_patch_bytes = 64u * 1024u,
                   .max_arena_bytes = ARENA_BYTES,
                   .max_validation_bytes = 16u * 1024u},
        .erased = 0xFF,
        .max_trials = 2,
        .chunk_bytes = CHUNK_BYTES,
        .retry_ms = 1000,
        .factory = &factory,
    };
    const mota_platform platform = {
        .ctx = NULL,
        .flash_read = flash_read,
        .flash_write = flash_write,
        .flash_erase = flash_erase,
        .slot_bytes = SLOT_LEN,
        .state_bytes = STATE_LEN,
        .flash_write_size = MOTA_FLASH_WRITE_SIZE,
        .flash_erase_size = MOTA_FLASH_ERASE_SIZE,
        .publish = NULL, /* the bundled session publishes */
        .now_ms = now_ms,
        .now_us = NULL,
        .unix_time = NULL,
        .validate = NULL, /* the bundled validator, on the memory-mapped slots: */
        .slot_base = {part + STATE_LEN, part + STATE_LEN + SLOT_LEN},
    };

    int32_t rc = mota_agent_boot(&config, &platform, arena, sizeof arena);
    if (rc != MOTA_OK) {
        if (mota_error_must_reboot(rc)) reboot(rc);
        printf("agent-net-c: boot refused: %s\n", mota_error_name(rc));
        halt("bad configuration");
    }
    mota_active_model shown;
    int have = mota_agent_active_model(&shown) == MOTA_OK;
    announce("boot running", have, &shown);
    uint8_t phase = 0; /* no update */
    show_phase(&phase); /* the update this boot resumes, if any */

    rc = mota_session_start(stream_read, stream_write, NULL, password, 30, session_buffer, sizeof session_buffer);
    if (rc != MOTA_OK) halt(rc == MOTA_ERROR_ARGUMENT ? "bad device id or password" : "session");

    for (;;) {
        mota_session_progress progress;
        rc = mota_session_poll(&progress);
        if (rc < 0) reboot(rc);
        if (progress.connected) {
            printf("mota-device %s: connected\n", device_id);
            fflush(stdout);
        } else if (progress.messages == 0) {
            board_sleep();
        }
        show_phase(&phase);

        mota_active_model active;
        int has = mota_agent_active_model(&active) == MOTA_OK;
        if (has != have || (has && memcmp(active.sha256, shown.sha256, sizeof shown.sha256) != 0)) {
            have = has;
            shown = active;
            announce("running", have, &shown);
        }
    }
}
