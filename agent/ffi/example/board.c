/*
 * Startup and peripherals of QEMU mps2-an386 for agent-net-c: the vector table, reset
 * (FPU on, .data copied, .bss zeroed, newlib's semihosting handles, argv from the
 * semihosting command line), SysTick, UART0 and the system reset.
 *
 * newlib's own crt0 (rdimon-crt0) is not used (-nostartfiles): it takes the stack from
 * SYS_HEAPINFO, which QEMU answers for M-profile boards with addresses past this board's
 * SSRAM. Here the stack is the vector table's, at the top of RAM (see mps2-an386.ld).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "board.h"

#define REG(addr) (*(volatile uint32_t *)(addr))

/* System control block and SysTick. */
#define SCB_CPACR REG(0xE000ED88u)
#define SCB_AIRCR REG(0xE000ED0Cu)
#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
#define CPU_HZ 25000000u

/* CMSDK APB UART0. */
#define UART0 0x40004000u
#define UART_DATA REG(UART0 + 0x00u)
#define UART_STATE REG(UART0 + 0x04u)
#define UART_CTRL REG(UART0 + 0x08u)
#define UART_INTCLEAR REG(UART0 + 0x0Cu)
#define UART_BAUDDIV REG(UART0 + 0x10u)
#define TX_FULL (1u << 0)
#define RX_FULL (1u << 1)
#define TX_EN (1u << 0)
#define RX_EN (1u << 1)
#define RX_INT_EN (1u << 3)
#define RX_INT (1u << 1)
/* UART0's receive interrupt on the MPS2 FPGA images (AN385, AN386), and the NVIC's
   set-enable register for IRQs 0-31. */
#define UART0_RX_IRQ 0u
#define NVIC_ISER0 REG(0xE000E100u)
/* Spins uart_read waits for the next byte of a burst. */
#define BURST_SPINS 2000u

/* Linker script symbols. */
extern uint32_t __data_load__, __data_start__, __data_end__, __bss_start__, __bss_end__, __stack_top__;

extern void initialise_monitor_handles(void);
extern int main(int argc, char **argv);

/* --------------------------------------------------------------------------------- */
/* Semihosting: the command line QEMU was given (-semihosting-config ...,arg=...). */

static int semihost(int op, void *arg) {
    register int r0 __asm__("r0") = op;
    register void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

#define SYS_GET_CMDLINE 0x15
#define SYS_WRITE0 0x04
#define MAX_ARGS 8

static char cmdline[512];
static char *args[MAX_ARGS + 1];

static int get_args(void) {
    struct {
        char *buf;
        int len;
    } block = {cmdline, (int)sizeof cmdline - 1};
    if (semihost(SYS_GET_CMDLINE, &block) != 0) return 0;
    cmdline[block.len < (int)sizeof cmdline ? block.len : (int)sizeof cmdline - 1] = 0;
    int argc = 0;
    char *p = cmdline;
    while (*p != 0 && argc < MAX_ARGS) {
        while (*p == ' ') *p++ = 0;
        if (*p == 0) break;
        args[argc++] = p;
        while (*p != 0 && *p != ' ') p++;
    }
    args[argc] = NULL;
    return argc;
}

/* --------------------------------------------------------------------------------- */
/* Reset and exceptions. */

void Reset_Handler(void) __attribute__((noreturn));
void Reset_Handler(void) {
    SCB_CPACR |= 0xFu << 20; /* CP10, CP11: the FPU (the library is built hard-float) */
    __asm__ volatile("dsb\n isb" ::: "memory");
    memcpy(&__data_start__, &__data_load__, (size_t)((char *)&__data_end__ - (char *)&__data_start__));
    memset(&__bss_start__, 0, (size_t)((char *)&__bss_end__ - (char *)&__bss_start__));
    initialise_monitor_handles();
    int argc = get_args();
    exit(main(argc, args));
}

static volatile uint32_t millis;

void SysTick_Handler(void) {
    millis++;
}

/* UART0's receive interrupt only wakes the core from board_sleep. */
void UART0_RX_Handler(void) {
    UART_INTCLEAR = RX_INT;
}

/* A fault (a Rust panic traps with udf and lands here): say so and reset. */
void HardFault_Handler(void) {
    semihost(SYS_WRITE0, "agent-net-c: hard fault, reset\n");
    board_reset();
}

static void Default_Handler(void) {
    for (;;) {
    }
}

typedef void (*vector)(void);

__attribute__((section(".isr_vector"), used)) static const vector vectors[16 + 32] = {
    [0] = (vector)&__stack_top__,
    [1] = Reset_Handler,
    [2] = Default_Handler,   /* NMI */
    [3] = HardFault_Handler, /* HardFault */
    [4] = HardFault_Handler, /* MemManage */
    [5] = HardFault_Handler, /* BusFault */
    [6] = HardFault_Handler, /* UsageFault */
    [11] = Default_Handler,  /* SVCall */
    [12] = Default_Handler,  /* DebugMonitor */
    [14] = Default_Handler,  /* PendSV */
    [15] = SysTick_Handler,
    [16 + UART0_RX_IRQ] = UART0_RX_Handler,
};

/* --------------------------------------------------------------------------------- */
/* Board API. */

void board_start_clock(void) {
    SYST_RVR = CPU_HZ / 1000u - 1u;
    SYST_CVR = 0;
    SYST_CSR = 0x7u; /* processor clock, interrupt, enable */
}

uint32_t board_millis(void) {
    return millis;
}

void board_reset(void) {
    __asm__ volatile("dsb" ::: "memory");
    SCB_AIRCR = (0x5FAu << 16) | (1u << 2); /* VECTKEY, SYSRESETREQ */
    __asm__ volatile("dsb" ::: "memory");
    for (;;) {
    }
}

void board_sleep(void) {
    if ((UART_STATE & RX_FULL) == 0) __asm__ volatile("wfi" ::: "memory");
}

void uart_init(void) {
    UART_BAUDDIV = 16;
    UART_CTRL = TX_EN | RX_EN | RX_INT_EN;
    NVIC_ISER0 = 1u << UART0_RX_IRQ;
}

size_t uart_read(uint8_t *buf, size_t len) {
    size_t n = 0;
    while (n < len) {
        uint32_t spins = 0;
        while ((UART_STATE & RX_FULL) == 0) {
            if (n == 0 || spins == BURST_SPINS) return n;
            spins++;
        }
        buf[n++] = (uint8_t)UART_DATA;
    }
    return n;
}

void uart_write(const uint8_t *data, size_t len) {
    for (size_t i = 0; i < len; i++) {
        while ((UART_STATE & TX_FULL) != 0) {
        }
        UART_DATA = data[i];
    }
}
